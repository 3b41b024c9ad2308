"""Semantic text search: texts embedded by a sentence encoder through an effstack engine session, stored in
the same :class:`~.index.Index` (FAISS, write-ahead log, snapshots) as image embeddings.

A text index differs from an image index in three recorded facts only: its model says ``"modality": "text"``,
each entry's "path" slot holds the text itself (so a hit answers the text, and adds are made durable by the
same log record as their vectors), and its manifest's ``data`` names the corpus it was built from (source,
count, fingerprint).

Texts are embedded in length order: each window of :data:`WINDOW_BATCHES` batches is sorted by token length,
cut into batches of ``batch`` texts, each padded only to its own longest text, and the embeddings are put
back in the texts' order. Padding never changes an embedding (the encoder masks pads), so this only saves
the time a short text would spend on a long neighbour's pads.

>>> emb = load_text_embedder("all-minilm-l6-v2", engine="onnxruntime")                # doctest: +SKIP
>>> ix = Index.create("docs.idx", emb.describe(), emb.dim, data=corpus.describe())     # doctest: +SKIP
>>> for ids, texts, vectors in emb.embed_windows(ids, corpus.texts):                   # doctest: +SKIP
...     ix.add(ids, vectors, texts)
>>> ix.search(emb.embed_texts(["how do I sort a list"]), k=5)[0][0].text               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InputError
from .embed import _spec_dict
from .vectors import normalize

__all__ = ["BUILTIN", "MAX_QUERY_CHARS", "TextSearchEmbedder", "WINDOW_BATCHES", "calibration_texts",
           "check_query_text",
           "check_same_model", "length_batches", "load_corpus", "load_text_embedder", "text_embedder_from_manifest"]

BUILTIN = "builtin"  # --texts builtin: effstack.text.corpus.builtin_corpus()
WINDOW_BATCHES = 32  # batches sorted by length together (and acknowledged in the index together)
MAX_QUERY_CHARS = 20_000
CALIBRATION_TEXTS = 64


def load_corpus(source: str) -> Any:
    """The :class:`~effstack.text.corpus.TextCorpus` ``--texts`` names: ``builtin`` or a file or folder.

    Raises:
        InputError: the path is missing or holds no text.
    """
    from ..text.corpus import builtin_corpus, load_texts

    return builtin_corpus() if source == BUILTIN else load_texts(source)


def check_query_text(text: Any) -> str:
    """``text`` as a query: a non-blank string of at most :data:`MAX_QUERY_CHARS` characters.

    Raises:
        InputError: not a string, blank, or too long.
    """
    if not isinstance(text, str):
        raise InputError(f"the query text must be a string, got {type(text).__name__}; send "
                         '{"text": "...", "k": 10}')
    if not text.strip():
        raise InputError("the query text is empty; send some words to search for")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the query text has {len(text)} characters, over the limit of {MAX_QUERY_CHARS}; "
                         "send a shorter one")
    return text


def length_batches(lengths: Sequence[int], batch: int) -> list[np.ndarray]:
    """Positions grouped into batches of up to ``batch`` texts of similar length (shortest first; a stable
    sort, so equal lengths keep their order)."""
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch] for i in range(0, len(order), batch)]


class TextSearchEmbedder:
    """A sentence encoder's engine session plus its tokenizer: texts in, L2-normalised ``(N, dim)`` out.

    Build with :func:`load_text_embedder`. ``fingerprint`` identifies the weights (not the engine or the
    precision: an INT8 session of the model fills and queries the same index as its fp32 one).
    """

    modality = "text"

    def __init__(self, model: Any, session: Any, source: dict[str, Any], batch: int = 32,
                 calibration: dict[str, Any] | None = None):
        from ..text.tokenize import TextTokenizer

        self.model = model
        self.session = session
        self.source = source
        self.batch = int(batch)
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1, got {batch}")
        self.calibration = calibration
        self.tokenizer = TextTokenizer.from_model(model)
        self.fingerprint = hashlib.sha256(f"text|{model.fingerprint}".encode()).hexdigest()[:16]
        self.padded_tokens = 0  # tokens run, pads included (what length grouping keeps down)
        self.real_tokens = 0
        self.dim = int(self.embed_texts(["dimension probe"]).shape[1])
        self.padded_tokens = self.real_tokens = 0

    def describe(self) -> dict[str, Any]:
        """What an index's manifest records about the model (enough to load it again)."""
        return {"fingerprint": self.fingerprint, "name": self.model.name, "modality": "text", "layer": "output",
                **self.source, "max_length": self.tokenizer.max_length, "engine": self.session.engine,
                "precision": self.session.precision,
                **({"calibration": self.calibration} if self.calibration else {})}

    def embed_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Embeddings of token-id rows, in their order, run in length-sorted batches of :attr:`batch`."""
        from ..text.tokenize import pad

        if len(rows) == 0:
            raise InputError("no texts to embed; give at least one")
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for pos in length_batches([len(r) for r in rows], self.batch):
            x = pad([rows[i] for i in pos], self.tokenizer.pad_id)
            self.padded_tokens += x.size
            self.real_tokens += sum(len(rows[i]) for i in pos)
            parts.append((pos, np.asarray(self.session.infer(x), np.float32).reshape(len(pos), -1)))
        out = np.empty((len(rows), parts[0][1].shape[1]), np.float32)
        for pos, y in parts:  # back in the texts' order
            out[pos] = y
        return normalize(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings ``(N, dim)`` of ``texts``, in their order. Raises :class:`InputError` for a non-string."""
        return self.embed_ids(self.tokenizer.ids(texts))

    def embed_windows(self, ids: Sequence[str], texts: Sequence[str]
                      ) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
        """Yield ``(ids, texts, embeddings)`` a window of :data:`WINDOW_BATCHES` batches at a time, in the
        texts' order (sorted by length only inside the window, for the engine)."""
        window = self.batch * WINDOW_BATCHES
        for start in range(0, len(texts), window):
            chunk = list(texts[start : start + window])
            yield list(ids[start : start + window]), chunk, self.embed_texts(chunk)

    @property
    def padding_share(self) -> float:
        """Share of the tokens run so far that were pads (0 when nothing ran)."""
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def close(self) -> None:
        self.session.close()


def load_text_embedder(model: Any, engine: str = "auto", precision: str | None = None, threads: int | None = None,
                       batch: int = 32, calibration: dict[str, Any] | None = None,
                       knobs: dict[str, Any] | None = None) -> TextSearchEmbedder:
    """Load a sentence encoder (a name such as ``all-minilm-l6-v2``, a Hugging Face folder, a
    :class:`~effstack.models.ModelSpec` or a loaded text model) into an engine session.

    Args:
        engine: an effstack engine name; ``auto`` picks openvino, else onnxruntime, else torch.
        precision: the session's precision (default fp32).
        batch: texts per engine call.
        calibration: the texts an INT8 session is calibrated on (each its own batch, unpadded), as
            ``{"source": "builtin" | FILE | DIR, "samples": N}``: N texts spread evenly over the source (see
            :func:`calibration_texts`); None: :data:`CALIBRATION_TEXTS` of the built-in corpus. Recorded in
            :meth:`TextSearchEmbedder.describe` with the chosen texts' fingerprint, so a reload calibrates alike.
        knobs: the engine's settings for the session.

    Raises:
        ConfigError: the model is not a text encoder.
        UnknownModelError, ArtifactError, MissingDependencyError, PrecisionError, EngineError: from loading.
    """
    from ..engines import SessionOptions, get_engine
    from ..models import load_model
    from ..models.loader import LoadedModel
    from ..models.spec import ModelSpec
    from ..engines import auto_engine
    from ..text.tokenize import TextTokenizer

    loaded = model if isinstance(model, LoadedModel) else load_model(ModelSpec.coerce(model))
    if not loaded.meta.get("text"):
        raise ConfigError(f"{loaded.name!r} is not a text encoder; give a text model such as all-minilm-l6-v2 or "
                          "a Hugging Face encoder folder (config.json + tokenizer.json)")
    precision = precision or "fp32"
    batches, record = None, None
    if precision == "int8":
        record = dict(calibration or {"source": BUILTIN, "samples": CALIBRATION_TEXTS})
        texts = calibration_texts(record)
        tok = TextTokenizer.from_model(loaded)
        batches = [tok.encode([t]) for t in texts]
        record["fingerprint"] = _texts_fingerprint(texts)
    session = get_engine(auto_engine(engine)).load(
        loaded, SessionOptions(precision=precision, threads=threads, batch=batch, calibration=batches,
                               knobs=dict(knobs or {})))
    source = {"spec": _spec_dict(loaded.spec), **({"knobs": dict(knobs)} if knobs else {})}
    try:
        return TextSearchEmbedder(loaded, session, source, batch, record)
    except BaseException:
        session.close()
        raise


def _texts_fingerprint(texts: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]


def calibration_texts(record: dict[str, Any]) -> list[str]:
    """The texts a calibration record names: ``samples`` spread evenly over ``source`` (``builtin``, a file or
    a folder).

    Raises:
        ConfigError: samples < 1.
        InputError: the source is gone or holds no text.
        ArtifactError: the record's ``fingerprint`` no longer matches the texts (the source changed).
    """
    from .sources import even_sample

    samples = record.get("samples", CALIBRATION_TEXTS)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"calibration samples must be a whole number >= 1, got {samples!r}; e.g. 32")
    corpus = load_corpus(str(record.get("source", BUILTIN)))
    texts = [corpus.texts[i] for i in even_sample(len(corpus), samples)]
    if record.get("fingerprint") and record["fingerprint"] != _texts_fingerprint(texts):
        raise ArtifactError(f"the INT8 calibration texts of {record['source']!r} changed since the index was built; "
                            "put them back, query in fp32, or rebuild the index")
    return texts


def text_embedder_from_manifest(model: dict[str, Any], dim: int, engine: str = "auto", precision: str | None = None,
                                threads: int | None = None, batch: int = 32) -> TextSearchEmbedder:
    """The text embedder a text index's manifest describes (its model spec), checked against it.

    Raises:
        ArtifactError: the manifest names no model, or the model loaded now is not the one that built the index.
    """
    from ..models.spec import ModelSpec

    spec = model.get("spec")
    if not isinstance(spec, dict):
        raise ArtifactError("the text index's manifest records no model spec; rebuild it with 'effstack index build'")
    precision = precision or model.get("precision", "fp32")
    recorded = model.get("calibration") if precision == "int8" else None  # quantize as the build did
    emb = load_text_embedder(ModelSpec.from_dict(spec), engine, precision, threads, batch,
                             recorded if isinstance(recorded, dict) else None)
    try:
        check_same_model(model, dim, emb, f"the model {spec.get('source')!r}")
    except BaseException:
        emb.close()
        raise
    return emb


def check_same_model(recorded: dict[str, Any], dim: int, emb: Any, what: str = "this model") -> None:
    """Refuse an embedder that did not build the index: another kind (image/text), name, dimension or weights.

    Raises:
        ArtifactError: one line naming the difference and what to do.
    """
    have = getattr(emb, "modality", "image")
    want = "text" if recorded.get("modality") == "text" else "image"
    if have != want:
        raise ArtifactError(f"the index holds {want}s but {what} embeds {have}s; query a {want} index with its own "
                            "model")
    name = emb.model.name
    if recorded.get("name") and recorded["name"] != name:
        raise ArtifactError(f"the index was built with {recorded['name']!r}, not {name!r}; query it with the model "
                            "that built it, or build a new index with this one")
    if int(dim) != emb.dim:
        raise ArtifactError(f"{what} embeds {emb.dim} values but the index holds {dim}; query it with the model "
                            "that built it")
    if emb.fingerprint != recorded.get("fingerprint"):
        raise ArtifactError(f"{what} has fingerprint {emb.fingerprint}, but the index was built with "
                            f"{recorded.get('fingerprint')}: its weights differ; put the original model back, or "
                            "rebuild the index")
