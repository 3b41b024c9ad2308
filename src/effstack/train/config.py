"""``TrainConfig``: every setting of the shared training loop, validated once, round-tripping through dicts.

>>> TrainConfig(epochs=3, lr=1e-3).to_dict()["optimizer"]
'adamw'
>>> TrainConfig.from_dict({"epochs": 2}).epochs
2
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError

__all__ = ["AMP_MODES", "AUGMENTS", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "config_from_dict"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "off")
AUGMENTS = ("none", "shift", "flip-shift")


def config_from_dict(cls: Any, d: dict[str, Any], what: str, nested: dict[str, Any] | None = None) -> Any:
    """Build the config dataclass ``cls`` from a dict; ``nested`` maps a key to the class of its sub-config.

    Raises:
        ConfigError: a key ``cls`` does not have (named, with the ones it has), or a bad value.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{what} settings must be a dict, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} setting {unknown[0]!r}; use one of: {', '.join(sorted(known))}")
    d = dict(d)
    for key, sub in (nested or {}).items():
        if isinstance(d.get(key), dict):
            d[key] = sub.from_dict(d[key])
    return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the one loop behind ``train``, ``distill``, QAT, ternary and prune fine-tuning.

    epochs: passes over the data. batch_size: samples per step. lr: peak learning rate.
    weight_decay: decoupled (AdamW) or L2 (SGD, momentum 0.9, Nesterov). optimizer: ``adamw`` | ``sgd``.
    schedule: ``cosine`` (to zero at the last step) | ``constant``, after ``warmup_epochs`` of linear
    warm-up (fractions allowed). label_smoothing: in [0, 1). amp: ``auto`` (bf16 autocast only on a CPU
    with native bf16 units; off elsewhere, where emulated bf16 is many times slower), ``bf16``, ``off``.
    augment: ``none`` | ``shift`` (random translation by up to 1/8 of the side, zero fill) |
    ``flip-shift`` (plus horizontal flips; not for digits or text); applied per batch, so a teacher and
    its student see the same augmented images. seed: the loop's randomness (shuffling, augmentation,
    dropout) derives from it, per epoch, so a resumed run repeats the uninterrupted one. freeze_norm: keep
    every BatchNorm layer in eval mode while training (its running statistics and the ones it normalises
    with stay fixed; its scale and shift still learn): fine-tuning a pretrained model on a few hundred
    images in small batches would otherwise replace its ImageNet statistics with noisy ones. checkpoint_dir:
    where ``last.pt`` is written after every epoch (None: no checkpoints). resume: continue from
    ``checkpoint_dir/last.pt`` when it exists. progress: show a rich progress bar on stderr.

    Raises:
        ConfigError: a value out of range, an unknown name, or ``resume`` without ``checkpoint_dir``.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    amp: str = "auto"
    augment: str = "none"
    seed: int = 0
    freeze_norm: bool = False
    checkpoint_dir: str | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            low = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "label_smoothing"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}; try 1e-3 for adamw or 0.05 for sgd")
        if self.label_smoothing >= 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}; 0.1 is usual")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs must be at most epochs ({self.epochs}), got {self.warmup_epochs:g}")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("amp", AMP_MODES),
                              ("augment", AUGMENTS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", str(self.checkpoint_dir))
        if self.resume and not self.checkpoint_dir:
            raise ConfigError("resume needs a checkpoint_dir to resume from; pass checkpoint_dir=PATH")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output. Raises ConfigError on unknown keys."""
        return config_from_dict(cls, d, "train")

    def resumable_dict(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run resuming it (not epochs, paths or display).

        ``epochs`` may grow on resume (train longer); the cosine schedule then stretches to the new end.
        """
        d = self.to_dict()
        for key in ("epochs", "checkpoint_dir", "resume", "progress"):
            d.pop(key)
        return d
