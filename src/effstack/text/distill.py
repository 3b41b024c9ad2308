"""A smaller text encoder distilled from a larger one: fewer layers, taught to give the teacher's embeddings.

The student is the teacher's architecture with ``layers`` of its transformer layers: embeddings copied,
and evenly spaced layers copied, always ending with the teacher's last (6 -> 3 keeps layers 1, 3, 5:
every other one), as DistilBERT and the small sentence-transformers were made. It then learns to match the
teacher's sentence embeddings on the training texts (loss ``1 - cosine``, or the squared distance between the
unit vectors, which is ``2 - 2 cosine``: the same optimum) and is scored on held-out texts with
:mod:`effstack.text.quality` (cosine agreement with the teacher, recall@10 of the teacher's neighbours).

The teacher's embeddings are computed once, before the first epoch. Batches are padded to their own longest
text (never to the model's maximum), which padding cannot change. A small loop (not
:func:`effstack.train.fit`: that one trains on float images with integer labels) with the same learning-rate
schedule and progress bar.

:func:`save_student` writes a Hugging Face folder (``save_pretrained`` plus the teacher's tokenizer files),
atomically, so ``load_model(folder)`` loads the student like any text model.

>>> r = distill_text(load_model("all-minilm-l6-v2"), d.train_ids, TextDistillConfig(layers=3), eval_ids=d.eval_ids)  # doctest: +SKIP
>>> save_student(r.module, "minilm-l3")                                                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EffstackError, InputError, one_line
from .data import unpad
from .quality import TextQuality, compare, embed
from .tokenize import pad

__all__ = ["TextDistillConfig", "TextDistillResult", "distill_text", "kept_layers", "make_text_distiller",
           "save_student", "student_from_teacher"]

LOSSES = ("cosine", "mse")
# files of a Hugging Face folder that belong to the weights, not the tokenizer (the student writes its own)
_WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
                 "rust_model.ot", "model.onnx", "README.md")


@dataclass(frozen=True)
class TextDistillConfig:
    """layers: the student's transformer layers (None: half the teacher's, at least 1). epochs, batch_size,
    lr (AdamW, warm-up then cosine decay), weight_decay: the training. loss: ``cosine`` or ``mse``.
    progress: a progress bar on stderr. seed: batch order and dropout.

    Raises:
        ConfigError: a value out of range.
    """

    layers: int | None = None
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps
    loss: str = "cosine"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.layers is not None and (isinstance(self.layers, bool) or not isinstance(self.layers, int)
                                        or self.layers < 1):
            raise ConfigError(f"layers must be a positive integer (or None: half the teacher's), got {self.layers!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}; 1e-4 is usual")
        if not 0 <= self.warmup < 1 or not self.weight_decay >= 0:
            raise ConfigError(f"warmup must be in [0, 1) and weight_decay >= 0, got {self.warmup}, {self.weight_decay}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TextDistillResult:
    """The trained student (``module``, a :class:`~effstack.text.encoder.TextEmbedder`), which teacher layers
    it started from, the loss per epoch, and its quality on the evaluation texts before and after training."""

    module: Any
    layers: list[int]
    config: TextDistillConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    before: TextQuality | None = None
    after: TextQuality | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "config": self.config.to_dict(), "history": self.history,
                "before": self.before.to_dict() if self.before else None,
                "after": self.after.to_dict() if self.after else None, "seconds": round(self.seconds, 2)}


def kept_layers(teacher_layers: int, layers: int) -> list[int]:
    """Which teacher layers a ``layers``-layer student starts from: evenly spaced, ending with the last.

    >>> kept_layers(6, 3), kept_layers(2, 1), kept_layers(6, 4)
    ([1, 3, 5], [1], [1, 2, 4, 5])
    """
    if not 1 <= layers <= teacher_layers:
        raise ConfigError(f"the student must have 1..{teacher_layers} layers (the teacher's), got {layers}")
    return [math.ceil((i + 1) * teacher_layers / layers) - 1 for i in range(layers)]


def student_from_teacher(teacher: Any, layers: int | None = None) -> tuple[Any, list[int]]:
    """A copy of ``teacher`` (a LoadedModel or :class:`TextEmbedder`) with ``layers`` of its transformer layers.

    Raises:
        ConfigError: a teacher that is not an effstack text encoder, or a bad layer count.
    """
    from torch import nn

    from .encoder import TextEmbedder

    module = getattr(teacher, "module", None) or teacher
    if not isinstance(module, TextEmbedder):
        raise ConfigError("the teacher must be a text encoder loaded by effstack (load_model of a text model)")
    backbone = module.backbone
    stack = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise ConfigError(f"cannot find the transformer layers of {type(backbone).__name__} (expected "
                          "backbone.encoder.layer, as in BERT-like encoders)")
    total = len(stack)
    layers = max(1, total // 2) if layers is None else int(layers)
    keep = kept_layers(total, layers)
    small = copy.deepcopy(module)
    small.backbone.encoder.layer = nn.ModuleList([small.backbone.encoder.layer[i] for i in keep])
    small.backbone.config.num_hidden_layers = layers
    for new, layer in enumerate(small.backbone.encoder.layer):  # attention caches index layers by position
        attn = getattr(getattr(layer, "attention", None), "self", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new
    return small, keep


def _loss(kind: str) -> Callable[[Any, Any], Any]:
    import torch.nn.functional as F

    if kind == "mse":
        return lambda s, t: F.mse_loss(F.normalize(s, dim=-1), F.normalize(t, dim=-1), reduction="sum") / len(s)
    return lambda s, t: (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


def _teacher_embeddings(teacher: Any, rows: list[np.ndarray], pad_id: int, chunk: int = 64) -> np.ndarray:
    order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths together: little padding
    parts = []
    for i in range(0, len(rows), chunk):
        idx = order[i:i + chunk]
        parts.append((idx, embed(teacher, pad([rows[j] for j in idx], pad_id))))
    out = np.empty((len(rows), parts[0][1].shape[1]), np.float32)
    for idx, e in parts:
        out[idx] = e
    return out


def distill_text(teacher: Any, train_ids: np.ndarray, config: TextDistillConfig | None = None, *,
                 eval_ids: np.ndarray | None = None, student: Any = None) -> TextDistillResult:
    """Distil ``teacher`` into a student with fewer layers on the token ids ``train_ids`` ``(N, L)``.

    Args:
        teacher: a text LoadedModel (``meta["text"]`` gives the pad id) or its :class:`TextEmbedder`.
        train_ids: padded token ids of the training texts (pads are stripped; batches re-padded).
        config: :class:`TextDistillConfig` (default: half the layers, 3 epochs).
        eval_ids: held-out ids; when given, the student is scored against the teacher before and after.
        student: a student module to train instead of a fresh :func:`student_from_teacher` one.

    Raises:
        InputError: no training ids, or ids that are not a 2-D integer batch.
        ConfigError: a bad config or a teacher that is not a text encoder.
    """
    import torch

    from ..train.loop import _progress, lr_factor

    config = config or TextDistillConfig()
    ids = np.asarray(train_ids)
    if ids.ndim != 2 or len(ids) == 0 or ids.dtype.kind not in "iu":
        raise InputError(f"training ids must be a non-empty (N, L) integer batch, got {ids.dtype} {ids.shape}")
    pad_id = int((getattr(teacher, "meta", {}).get("text") or {}).get("pad_id", 0))
    t0 = time.perf_counter()
    if student is None:
        student, keep = student_from_teacher(teacher, config.layers)
    else:
        keep = []
    rows = [r for r in unpad(ids, pad_id) if len(r)]
    target = torch.from_numpy(_teacher_embeddings(teacher, rows, pad_id))
    reference = embed(teacher, eval_ids) if eval_ids is not None else None
    before = compare(embed(student, eval_ids), reference) if reference is not None else None
    params = [p for p in student.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loss_of = _loss(config.loss)
    steps = math.ceil(len(rows) / config.batch_size)
    total = config.epochs * steps
    history: list[dict[str, Any]] = []
    with _progress(config.progress, total, "distil text") as update:
        for epoch in range(config.epochs):
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            torch.manual_seed(config.seed * 100_003 + epoch)
            student.train()
            loss_sum, seen, te = 0.0, 0, time.perf_counter()
            for i, idx in enumerate(torch.randperm(len(rows), generator=gen).split(config.batch_size)):
                for g in opt.param_groups:
                    g["lr"] = config.lr * lr_factor(epoch * steps + i, total, round(config.warmup * total), "cosine")
                batch = torch.from_numpy(pad([rows[j] for j in idx.tolist()], pad_id))
                loss = loss_of(student(batch), target[idx])
                if not torch.isfinite(loss.detach()):
                    raise ConfigError(f"the distillation loss became {float(loss.detach())} at epoch {epoch + 1}; "
                                      f"lower lr (now {config.lr:g})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(idx)
                seen += len(idx)
                update(f"epoch {epoch + 1}/{config.epochs} loss {loss_sum / seen:.4f}", 1)
            history.append({"epoch": epoch + 1, "loss": round(loss_sum / seen, 6),
                            "seconds": round(time.perf_counter() - te, 2)})
    student.eval()
    for p in params:
        p.requires_grad_(False)
    after = compare(embed(student, eval_ids), reference) if reference is not None else None
    return TextDistillResult(student, keep, config, history, before, after, time.perf_counter() - t0)


def save_student(module: Any, folder: str | Path, teacher_folder: str | Path | None = None) -> Path:
    """Write ``module`` (a :class:`TextEmbedder`) as a Hugging Face folder ``load_model`` reads, atomically:
    ``save_pretrained`` of its encoder plus the teacher folder's tokenizer files (``tokenizer.json``,
    ``vocab.txt``, ``sentence_bert_config.json``, ...). ``teacher_folder`` defaults to the folder the
    module's config was loaded from.

    Raises:
        ArtifactError: no teacher folder with a ``tokenizer.json`` to copy the tokenizer from.
    """
    from .._files import atomic_dir
    from ..errors import ArtifactError

    src = Path(teacher_folder or getattr(module.backbone.config, "_name_or_path", "") or "")
    if not (src / "tokenizer.json").is_file():
        raise ArtifactError(f"cannot copy the tokenizer: {str(src)!r} has no tokenizer.json; pass teacher_folder")
    with atomic_dir(folder) as tmp:
        module.backbone.save_pretrained(str(tmp))
        for f in sorted(src.iterdir()):
            if f.is_file() and f.name not in _WEIGHT_FILES and not f.name.startswith("."):
                shutil.copy2(f, tmp / f.name)
    return Path(folder)


def make_text_distiller(data: Any, *, layers: int | None = None, epochs: int = 3, lr: float = 1e-4,
                        batch_size: int = 32, folder: str | Path | None = None,
                        progress: bool = False) -> Callable[[Any], Any]:
    """The ladder's distillation hook for a text encoder: a ``layers``-layer student taught on
    ``data.train``'s token ids, scored on ``data.eval``'s, saved as a Hugging Face folder (``folder``, or one
    in effstack's cache named after the teacher and the settings) and loaded back like any text model."""

    def distiller(variant: Any) -> Any:
        from ..export._cache import hash_arrays, hash_text
        from ..ladder.runner import Shrunk, Variant
        from ..models import load_model
        from .._files import cache_dir

        teacher = variant.model
        if data.train is None:
            return Shrunk(None, "distillation needs training texts; pass --data with enough texts to split")
        info = (getattr(teacher, "meta", {}) or {}).get("text")
        if not info or getattr(teacher, "module", None) is None:
            return Shrunk(None, "distilling a text encoder needs the float PyTorch model (a text model by name or folder)")
        config = TextDistillConfig(layers=layers, epochs=epochs, lr=lr, batch_size=batch_size, progress=progress)
        try:
            r = distill_text(teacher, data.train[0], config, eval_ids=data.eval[0])
            out = Path(folder) if folder else cache_dir("text-students") / \
                f"{teacher.fingerprint}-{hash_text(config.to_dict(), hash_arrays([data.train[0]]))}"
            save_student(r.module, out, info["folder"])
            small = load_model(str(out))
        except EffstackError as exc:
            return Shrunk(None, one_line(exc))
        v = Variant(f"student-l{len(r.layers)}", small, params=getattr(small, "params", None),
                    macs=getattr(small, "macs", None))
        return Shrunk(v, "distilled", {"student": str(out), "student_layers": len(r.layers),
                                       "teacher_layers": int(info["layers"]), "from_teacher_layers": r.layers,
                                       "epochs": epochs, "lr": lr, "loss": config.loss,
                                       "train_texts": int(len(data.train[0])),
                                       "before": r.before.to_dict() if r.before else None,
                                       "after": r.after.to_dict() if r.after else None,
                                       "seconds": round(r.seconds, 1)})

    return distiller
