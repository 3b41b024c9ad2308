"""``fit(model, data, config)``: the one small training loop shared by train, distill, QAT, ternary and prune.

What it does per epoch: seed everything from ``(config.seed, epoch)``, shuffle, augment each batch,
forward (bf16 autocast where the CPU has native bf16), loss (cross-entropy with label smoothing, or the
caller's ``loss_fn``), AdamW/SGD step with a per-step warm-up + cosine learning rate, then validate and
write ``last.pt`` atomically. Because every epoch re-seeds from the config, a run resumed from
``last.pt`` ends with the same weights as one that was never interrupted.

Threads: the loop leaves torch's thread count alone. On a CPU shared with other busy processes,
``torch.set_num_threads(1)`` trains many times faster (measured 30x less CPU per step for a small CNN on
2 loaded cores: idle OpenMP workers spin), which is why the benchmarks take ``--train-threads 1``.

>>> from effstack.testing import tiny_mlp                                       # doctest: +SKIP
>>> r = fit(tiny_mlp(), (x, y), TrainConfig(epochs=3, progress=False), val=(xv, yv))  # doctest: +SKIP
>>> r.history[-1]["val_top1"]                                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InputError, one_line
from .config import TrainConfig

__all__ = ["CHECKPOINT_NAME", "TrainResult", "evaluate", "fit", "resolve_amp", "sample_inputs", "unwrap"]

CHECKPOINT_NAME = "last.pt"
_FORMAT = "effstack-train/1"
LossFn = Callable[[Any, Any, Any], Any]  # (logits, y, x) -> scalar tensor; x is the augmented batch


@dataclass
class TrainResult:
    """What :func:`fit` did. ``history`` has one dict per epoch (also the epochs of a resumed run)."""

    model: Any
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0  # > 0 when the run resumed from a checkpoint
    checkpoint: Path | None = None
    seconds: float = 0.0
    amp: str = "off"  # what ran: "bf16" or "off"

    @property
    def val_top1(self) -> float | None:
        """Top-1 (points) on the validation data after the last epoch, or None without validation."""
        return self.history[-1].get("val_top1") if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "history": self.history, "start_epoch": self.start_epoch,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None, "seconds": round(self.seconds, 2),
                "amp": self.amp, "val_top1": self.val_top1}


def unwrap(model: Any, what: str = "model") -> Any:
    """The ``nn.Module`` inside ``model`` (a module or a LoadedModel). Raises ConfigError otherwise."""
    import torch

    module = model if isinstance(model, torch.nn.Module) else getattr(model, "module", model)
    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise ConfigError(f"{what} must be a PyTorch nn.Module (or a LoadedModel of one), got "
                          f"{type(module).__name__}; load ONNX models' PyTorch source instead")
    return module


def resolve_amp(amp: str) -> str:
    """``"bf16"`` or ``"off"``: ``auto`` is bf16 only on CPUs with native bf16 units (AVX512_BF16/AMX)."""
    if amp != "auto":
        return amp
    from ..hardware import has_native_bf16

    return "bf16" if has_native_bf16() else "off"


# --- data ---------------------------------------------------------------------------------------


class _Data:
    """Either in-memory tensors (fast index batches) or a torch Dataset (a DataLoader)."""

    def __init__(self, data: Any, what: str, labels_required: bool):
        import torch
        from torch.utils.data import Dataset

        self.dataset = None
        self.x = self.y = None
        if isinstance(data, Dataset):
            try:
                n = len(data)
            except TypeError:
                raise InputError(f"{what} must be a sized Dataset (with __len__), got {type(data).__name__}") from None
            if n < 1:
                raise InputError(f"{what} is empty; give at least one (x, y) sample")
            self.dataset, self.n = data, n
            return
        if isinstance(data, np.ndarray):
            data = (data, None)
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise InputError(f"{what} must be an (x, y) pair of numpy arrays or a torch Dataset, "
                             f"got {type(data).__name__}; wrap arrays as (x, y)")
        x, y = data
        x = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
        if x.ndim < 2 or x.shape[0] < 1 or x.dtype.kind != "f":
            raise InputError(f"{what} x must be a float array (N, ...) with N >= 1, got dtype {x.dtype} "
                             f"shape {x.shape}; convert images to float32")
        if not np.isfinite(x).all():
            raise InputError(f"{what} x holds NaN or infinite values; clean the data first")
        if y is None and labels_required:
            raise InputError(f"{what} has no labels; give (x, y) with integer labels, or a loss_fn that needs none")
        if y is not None:
            y = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
            if y.shape[:1] != x.shape[:1]:
                raise InputError(f"{what} must have one label per sample: x has {x.shape[0]}, y has shape {y.shape}")
            if y.ndim == 1:
                if y.dtype.kind not in "iu" or y.min() < 0:
                    raise InputError(f"{what} labels must be integer class indices >= 0, got dtype {y.dtype} "
                                     f"(min {y.min()}); convert them with y.astype(int)")
                y = y.astype(np.int64)
            self.y = torch.from_numpy(np.ascontiguousarray(y))
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.n = int(x.shape[0])

    def steps(self, batch_size: int) -> int:
        return math.ceil(self.n / batch_size)

    def batches(self, batch_size: int, generator: Any) -> Iterator[tuple[Any, Any]]:
        import torch

        if self.dataset is None:
            for idx in torch.randperm(self.n, generator=generator).split(batch_size):
                yield self.x[idx], (self.y[idx] if self.y is not None else None)
            return
        from torch.utils.data import DataLoader

        for batch in DataLoader(self.dataset, batch_size=batch_size, shuffle=True, generator=generator):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise InputError("a training Dataset must yield (x, y) pairs; return a tuple from __getitem__")
            yield batch[0].float(), batch[1]


def sample_inputs(data: Any, n: int = 256) -> Any:
    """The first ``n`` inputs of ``data`` (any form :func:`fit` takes) as a float32 tensor ``(n, ...)``.

    Raises:
        InputError: ``data`` is not one of those forms.
    """
    import torch

    d = _Data(data, "data", labels_required=False)
    if d.x is not None:
        return d.x[:n]
    first = [d.dataset[i] for i in range(min(n, d.n))]
    return torch.stack([torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item) for item in first]).float()


def _augment(x: Any, kind: str, generator: Any) -> Any:
    """Batch augmentation ``(N, C, H, W)``: random shift by up to 1/8 of the side (zero fill), optional flip."""
    import torch

    if kind == "none" or x.dim() != 4:
        return x
    n, _, h, w = x.shape
    if kind == "flip-shift":
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    m = max(1, h // 8)
    dy, dx = (int(v) for v in torch.randint(-m, m + 1, (2,), generator=generator))
    # one shift per batch keeps it a cheap pad + crop; batches differ, so the epoch sees many shifts
    padded = torch.nn.functional.pad(x, (m, m, m, m))
    return padded[:, :, m + dy:m + dy + h, m + dx:m + dx + w]


def evaluate(model: Any, data: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy in points of a classifier on ``(x, y)`` or a Dataset of ``(x, y)``.

    Raises:
        InputError: the data is not labelled, or is malformed (see :func:`fit`).
    """
    import torch

    module = unwrap(model)
    d = _Data(data, "validation data", labels_required=True)
    was_training = module.training
    module.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in d.batches(batch_size, torch.Generator().manual_seed(0)):
            correct += int((module(x).argmax(1) == y).sum())
    module.train(was_training)
    return 100.0 * correct / d.n


# --- optimisation -------------------------------------------------------------------------------


def _optimizer(params: list[Any], config: TrainConfig) -> Any:
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The learning-rate multiplier at ``step`` of ``total``: linear warm-up, then cosine to 0 or constant.

    >>> [round(lr_factor(s, 10, 2, "cosine"), 2) for s in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.02]
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# --- checkpoints --------------------------------------------------------------------------------


def _save_checkpoint(path: Path, epoch: int, module: Any, opt: Any, config: TrainConfig,
                     history: list[dict[str, Any]]) -> None:
    import torch

    from .._files import atomic_file

    state = {"format": _FORMAT, "epoch": epoch, "model": module.state_dict(), "optimizer": opt.state_dict(),
             "config": config.resumable_dict(), "history": history}
    try:
        with atomic_file(path) as tmp:
            torch.save(state, str(tmp))
    except OSError as exc:
        raise ArtifactError(f"cannot write checkpoint {str(path)!r}: {exc.strerror or exc}; "
                            "check checkpoint_dir is writable") from None


def _load_checkpoint(path: Path, module: Any, opt: Any, config: TrainConfig) -> tuple[int, list[dict[str, Any]]]:
    """Restore model and optimizer from ``path``; return (epochs done, history).

    Raises:
        ArtifactError: unreadable, not an effstack checkpoint, or weights that do not fit the model.
        ConfigError: it was written with different training settings.
    """
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"cannot read checkpoint {str(path)!r}: {one_line(exc, 160)}; "
                            "delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ArtifactError(f"{str(path)!r} is not an effstack training checkpoint; "
                            "point checkpoint_dir at a folder written by effstack train")
    mine = config.resumable_dict()
    for key, value in state["config"].items():
        if mine.get(key) != value:
            raise ConfigError(f"checkpoint {str(path)!r} was written with {key}={value!r}, this run has "
                              f"{key}={mine.get(key)!r}; resume with the same settings or use a new checkpoint_dir")
    try:
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ArtifactError(f"checkpoint {str(path)!r} does not fit this model: {one_line(exc, 160)}; "
                            "resume with the same architecture or use a new checkpoint_dir") from None
    return int(state["epoch"]), list(state["history"])


# --- progress -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[str, int], None]]:
    """Yield ``update(description, steps)``; a rich bar on stderr when enabled, else nothing."""
    if not enabled:
        yield lambda description, steps=0: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeRemainingColumn(), console=Console(stderr=True), refresh_per_second=2) as bar:
        task = bar.add_task("", total=total)
        yield lambda description, steps=0: bar.update(task, description=description, advance=steps)


# --- the loop -----------------------------------------------------------------------------------


def _default_loss(label_smoothing: float) -> LossFn:
    import torch

    def loss(logits: Any, y: Any, x: Any) -> Any:
        return torch.nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return loss


def _freeze_norm(module: Any) -> None:
    """Put every BatchNorm of ``module`` back in eval mode (``TrainConfig.freeze_norm``)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


def _check_first_batch(logits: Any, y: Any, custom_loss: bool) -> None:
    if custom_loss or y is None:
        return
    if logits.dim() != 2:
        raise InputError(f"the model must output logits (N, classes) for label training, got shape "
                         f"{tuple(logits.shape)}; pass a loss_fn for other outputs")
    if y.dim() == 1 and int(y.max()) >= logits.shape[1]:
        raise InputError(f"label {int(y.max())} is outside the model's {logits.shape[1]} classes "
                         f"(0..{logits.shape[1] - 1}); fix the labels or give the model more outputs")


def _param_groups(module: Any, params: list[Any], lr_scale: dict[str, float] | None) -> list[Any]:
    """``params`` as optimizer groups: one per learning-rate multiple (``lr_scale``: name substring -> multiple)."""
    if not lr_scale:
        return params
    names = {id(p): n for n, p in module.named_parameters()}
    groups: dict[float, list[Any]] = {}
    for p in params:
        name = names.get(id(p), "")
        groups.setdefault(next((s for key, s in lr_scale.items() if key in name), 1.0), []).append(p)
    return [{"params": ps, "lr_scale": s} for s, ps in sorted(groups.items(), key=lambda kv: kv[0] != 1.0)]


def fit(model: Any, data: Any, config: TrainConfig | None = None, *, val: Any = None,
        loss_fn: LossFn | None = None, label: str = "train",
        lr_scale: dict[str, float] | None = None) -> TrainResult:
    """Train ``model`` in place on ``data``; return a :class:`TrainResult` (model back in eval mode).

    Args:
        model: an ``nn.Module`` or a LoadedModel. If none of its parameters require gradients (a loaded
            model is frozen), all are trained; otherwise only those that do.
        data: an ``(x, y)`` pair of numpy arrays (x float ``(N, ...)``, y int ``(N,)``), or a torch
            Dataset yielding ``(x, y)``. ``y`` may be None (or ``data`` just ``x``) when ``loss_fn``
            needs no labels (distillation on unlabelled images).
        config: the :class:`TrainConfig` (default: its defaults).
        val: ``(x, y)`` or a Dataset scored (top-1, points) after every epoch.
        loss_fn: ``loss_fn(logits, y, x) -> scalar tensor`` where ``x`` is the augmented batch the
            model saw (a teacher can look at the same images); default cross-entropy with
            ``config.label_smoothing``.
        label: the progress bar's title.
        lr_scale: parameters whose name contains a key train at that multiple of the learning rate (QAT's
            learned quantizer steps: ``{"log_step": 50.0}``); the schedule applies to every group alike.

    Raises:
        ConfigError: a bad config, a model that is not a torch module, or a checkpoint written with
            other settings.
        InputError: malformed data or labels outside the model's classes.
        ArtifactError: a checkpoint that cannot be read/written or does not fit the model.

    Example:
        >>> r = fit(net, (x, y), TrainConfig(epochs=5, checkpoint_dir="ckpt", resume=True))  # doctest: +SKIP
    """
    import torch

    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    module = unwrap(model)
    train_data = _Data(data, "training data", labels_required=loss_fn is None)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        params = list(module.parameters())
        for p in params:
            p.requires_grad_(True)
    if not params:
        raise ConfigError("model has no parameters to train; give a model with weights")
    opt = _optimizer(_param_groups(module, params, lr_scale), config)
    amp = resolve_amp(config.amp)
    loss_of = loss_fn or _default_loss(config.label_smoothing)
    ckpt = Path(config.checkpoint_dir).expanduser() / CHECKPOINT_NAME if config.checkpoint_dir else None
    start, history = 0, []
    if ckpt is not None and config.resume and ckpt.is_file():
        start, history = _load_checkpoint(ckpt, module, opt, config)
        history = history[:start]
    steps = train_data.steps(config.batch_size)
    total, warmup = config.epochs * steps, round(config.warmup_epochs * steps)
    t0 = time.perf_counter()
    with _progress(config.progress, total, label) as update:
        update(f"epoch {start}/{config.epochs}", start * steps)
        for epoch in range(start, config.epochs):
            te = time.perf_counter()
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout etc.: the same on a resumed run
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            module.train()
            if config.freeze_norm:
                _freeze_norm(module)
            loss_sum, seen = 0.0, 0
            for i, (x, y) in enumerate(train_data.batches(config.batch_size, gen)):
                for group in opt.param_groups:
                    group["lr"] = config.lr * group.get("lr_scale", 1.0) * lr_factor(epoch * steps + i, total, warmup,
                                                                                      config.schedule)
                x = _augment(x, config.augment, gen)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
                    logits = module(x)
                    if epoch == start and i == 0:
                        _check_first_batch(logits, y, loss_fn is not None)
                    loss = loss_of(logits.float(), y, x)
                if not torch.isfinite(loss.detach()):
                    raise ConfigError(f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {i + 1}; "
                                      f"lower lr (now {config.lr:g}) or check the data")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(x)
                seen += len(x)
                update(f"epoch {epoch + 1}/{config.epochs} loss {loss_sum / seen:.4f}", 1)
            row: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / seen,
                                   "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - te, 3)}
            if val is not None:
                row["val_top1"] = evaluate(module, val)
                update(f"epoch {epoch + 1}/{config.epochs} loss {row['loss']:.4f} val {row['val_top1']:.2f}", 0)
            history.append(row)
            if ckpt is not None:
                _save_checkpoint(ckpt, epoch + 1, module, opt, config, history)
    module.eval()
    return TrainResult(model=model, config=config, history=history, start_epoch=start, checkpoint=ckpt,
                       seconds=time.perf_counter() - t0, amp=amp)
