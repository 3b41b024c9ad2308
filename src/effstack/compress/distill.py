"""``distill(teacher, student, data, DistillConfig(...))``: logit distillation on the shared training loop.

The loss on each batch is ``alpha * T² * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) *
CE(student, y)`` (Hinton et al., 2015), plus ``hard * CE(student, argmax teacher)`` when asked (top-1
agreement is what a ladder scores a student on, and the soft term alone spends its effort on the tail of
the distribution). The teacher looks at exactly the batch the student sees, after the loop's
augmentation, so both are consistent; without augmentation its outputs are computed once, before the
first epoch, instead of on every batch of every epoch (a Lite2 teacher at 260 px costs more than a Lite0
student's forward and backward at 192). Without labels (unlabelled or synthetic images) the loss is the
distillation term alone: the teacher labels the data.

>>> from effstack.compress import DistillConfig, distill                                   # doctest: +SKIP
>>> r = distill(teacher, student, x_unlabelled, DistillConfig(temperature=4, alpha=1.0))   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..train.config import TrainConfig, config_from_dict
from ..train.loop import TrainResult, fit, sample_inputs, unwrap

__all__ = ["DistillConfig", "distill", "distillation_loss", "teacher_labels"]


@dataclass(frozen=True)
class DistillConfig:
    """temperature: softens both distributions (> 0; 2-8 is usual). alpha: weight of the teacher term in
    [0, 1] (1: teacher only; labels, when given, get ``1 - alpha``). hard: weight (>= 0) of a
    cross-entropy on the teacher's own top-1 class. train: the :class:`TrainConfig`.

    Raises:
        ConfigError: a value out of range.
    """

    temperature: float = 4.0
    alpha: float = 0.9
    hard: float = 0.0
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0:
            raise ConfigError(f"temperature must be a positive number, got {self.temperature!r}; 4 is usual")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1] (the teacher's weight), got {self.alpha!r}")
        if isinstance(self.hard, bool) or not isinstance(self.hard, (int, float)) or not self.hard >= 0:
            raise ConfigError(f"hard must be a non-negative weight (0: off), got {self.hard!r}")
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig, got {type(self.train).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        return config_from_dict(cls, d, "distill", {"train": TrainConfig})


def _labels_of(data: Any) -> Any:
    """The labels inside ``data`` (None for a bare array, ``(x, None)`` or an unlabelled Dataset)."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[1]
    return None if isinstance(data, np.ndarray) else "dataset"


def _check_outputs(teacher: Any, student: Any, data: Any) -> None:
    """Both models must give logits of the same shape on a sample of ``data``."""
    import torch

    x = sample_inputs(data, 2)
    with torch.inference_mode():
        try:
            t, s = teacher(x), student(x)
        except RuntimeError as exc:
            raise InputError(f"teacher or student rejects the data's shape {tuple(x.shape)}: "
                             f"{' '.join(str(exc).split())[:160]}") from None
    if t.shape != s.shape or t.dim() != 2:
        raise InputError(f"teacher and student must output logits of the same shape (N, classes), got "
                         f"{tuple(t.shape)} and {tuple(s.shape)}; give the student the teacher's classes")


def distill(teacher: Any, student: Any, data: Any, config: DistillConfig | None = None, *,
            val: Any = None) -> TrainResult:
    """Train ``student`` (in place) to match ``teacher``'s logits on ``data``; return the TrainResult.

    Args:
        teacher: a trained ``nn.Module`` or LoadedModel (kept frozen, in eval mode).
        student: the ``nn.Module`` or LoadedModel to train; same number of outputs as the teacher.
        data: ``(x, y)``, ``(x, None)`` or ``x`` (numpy; unlabelled: the teacher labels it), or a
            Dataset of ``(x, y)``.
        config: :class:`DistillConfig` (temperature, alpha, train).
        val: ``(x, y)`` scored after each epoch (top-1, points).

    Raises:
        ConfigError: a bad config, or models that are not torch modules.
        InputError: malformed data, or teacher and student outputs that do not match.

    Example:
        >>> r = distill(big, small, (x, y), DistillConfig(temperature=4, alpha=0.9))  # doctest: +SKIP
    """
    config = config or DistillConfig()
    if not isinstance(config, DistillConfig):
        raise ConfigError(f"config must be a DistillConfig, got {type(config).__name__}")
    t_mod, s_mod = unwrap(teacher, "teacher"), unwrap(student, "student")
    if t_mod is s_mod:
        raise ConfigError("teacher and student are the same module; give the student its own copy")
    t_mod.eval()
    for p in t_mod.parameters():
        p.requires_grad_(False)
    _check_outputs(t_mod, s_mod, data)
    labelled = _labels_of(data) is not None
    alpha = config.alpha if labelled else 1.0
    cached = _with_teacher_outputs(t_mod, data) if config.train.augment == "none" else None
    if cached is not None:
        data, classes = cached
        loss_fn = _cached_loss(classes, config.temperature, alpha, config.hard, config.train.label_smoothing,
                               labelled)
    else:
        loss_fn = distillation_loss(t_mod, config.temperature, alpha, config.train.label_smoothing, config.hard)
    return fit(student, data, config.train, val=val, loss_fn=loss_fn, label="distill")


def _with_teacher_outputs(teacher: Any, data: Any, batch_size: int = 64) -> tuple[tuple[Any, Any], int] | None:
    """``data`` (arrays) as ``(x, targets)`` where each row of ``targets`` is the teacher's logits followed by
    the sample's label (-1 when unlabelled), and the number of classes; None for a Dataset (computed per
    batch then)."""
    import torch

    if isinstance(data, np.ndarray):
        data = (data, None)
    if not isinstance(data, (tuple, list)) or len(data) != 2 or not isinstance(data[0], np.ndarray):
        return None
    x, y = data
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.inference_mode():
        logits = torch.cat([teacher(b).float() for b in xt.split(batch_size)]).numpy()
    labels = np.full((len(x), 1), -1.0, np.float32) if y is None else np.asarray(y, np.float32).reshape(-1, 1)
    return (x, np.concatenate([logits, labels], axis=1)), logits.shape[1]


def _soft_terms(logits: Any, teacher_logits: Any, T: float, alpha: float, hard: float) -> Any:
    import torch.nn.functional as F

    target = F.softmax(teacher_logits / T, dim=1)
    loss = alpha * T * T * F.kl_div(F.log_softmax(logits / T, dim=1), target, reduction="batchmean")
    if hard > 0:
        loss = loss + hard * F.cross_entropy(logits, teacher_logits.argmax(1))
    return loss


def _cached_loss(classes: int, temperature: float, alpha: float, hard: float, smoothing: float,
                 labelled: bool) -> Any:
    """The loss for targets packed by :func:`_with_teacher_outputs`."""
    import torch.nn.functional as F

    T = float(temperature)

    def loss_fn(logits: Any, y: Any, x: Any) -> Any:
        loss = _soft_terms(logits, y[:, :classes], T, alpha, hard)
        if labelled and alpha < 1:
            loss = loss + (1 - alpha) * F.cross_entropy(logits, y[:, classes].long(), label_smoothing=smoothing)
        return loss

    return loss_fn


def distillation_loss(teacher: Any, temperature: float = 4.0, alpha: float = 1.0, smoothing: float = 0.0,
                      hard: float = 0.0) -> Any:
    """The training loop's ``loss_fn(logits, y, x)`` for distilling from ``teacher`` (a frozen module).

    ``alpha * T² * KL(softmax(teacher(x)/T) || softmax(logits/T))``, plus ``(1 - alpha)`` cross-entropy
    when labels come with the batch, plus ``hard`` times the cross-entropy on the teacher's top-1; ``x`` is
    the augmented batch the student saw, so the teacher grades exactly that. Pruning's fine-tuning uses it
    too (the unpruned model teaches its pruned copy, so no labels are needed).
    """
    import torch
    import torch.nn.functional as F

    T, alpha = float(temperature), float(alpha)

    def loss_fn(logits: Any, y: Any, x: Any) -> Any:
        with torch.no_grad():
            teacher_logits = teacher(x).float()
        loss = _soft_terms(logits, teacher_logits, T, alpha, hard)
        if alpha < 1 and y is not None:
            loss = loss + (1 - alpha) * F.cross_entropy(logits, y, label_smoothing=smoothing)
        return loss

    return loss_fn


def teacher_labels(teacher: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The teacher's top-1 class for each sample of ``x`` (to label synthetic or unlabelled images).

    Example:
        >>> y = teacher_labels(teacher, x_synthetic)   # doctest: +SKIP
    """
    import torch

    module = unwrap(teacher, "teacher").eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    with torch.inference_mode():
        return torch.cat([module(b).argmax(1) for b in xt.split(batch_size)]).numpy()
