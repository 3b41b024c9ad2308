"""Visual and semantic text search: embeddings from a CNN layer or a sentence encoder, a crash-safe FAISS
index, and its HTTP endpoints (see :mod:`.text` for text indexes).

>>> from effstack.search import Index, load_embedder                          # doctest: +SKIP
>>> emb = load_embedder("resnet50", weights="resnet50.pth")                  # doctest: +SKIP
>>> ix = Index.create("photos.idx", emb.describe(), emb.dim)                 # doctest: +SKIP
>>> ix.add(["cat.jpg"], emb.embed_images(["cat.jpg"]), ["cat.jpg"])          # doctest: +SKIP
>>> ix.search(emb.embed_images(["query.jpg"]), k=10)[0]                      # doctest: +SKIP
"""

from .embed import Embedder, ImageView, decode_image, embedder_from_manifest, list_images, load_embedder
from .index import DEFAULT_RECALL_TARGET, Hit, Index, UnknownIdError
from .sources import Calibration
from .text import TextSearchEmbedder, load_text_embedder
from .vectors import KINDS, choose_kind, exact_neighbours, normalize

__all__ = ["DEFAULT_RECALL_TARGET", "KINDS", "Calibration", "Embedder", "Hit", "ImageView", "Index", "UnknownIdError",
           "choose_kind", "decode_image", "embedder_from_manifest", "exact_neighbours", "list_images", "load_embedder",
           "load_text_embedder", "normalize", "TextSearchEmbedder"]
