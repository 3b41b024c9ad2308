"""ModelSpec and InputSpec: what a model is and what it eats."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError

_DTYPES = ("float32", "float16", "bfloat16", "uint8", "int8", "int32", "int64")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """One input tensor, per sample (the batch axis is not part of ``shape``).

    Example: ``InputSpec(shape=(3, 224, 224))`` is an NCHW float32 image batch ``(N, 3, 224, 224)``.
    ``mean``/``std`` describe the preprocessing the model expects of raw [0, 1] pixels, recorded so
    that data loaders and the server can apply it; the model itself takes normalised tensors.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    name: str = "input"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"input shape must be positive sizes without the batch axis, got {shape}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"input dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.layout and len(self.layout) != len(shape) + 1:
            raise ConfigError(
                f"layout {self.layout!r} must name the batch axis and each of the {len(shape)} sample axes"
            )
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(float(v) for v in value))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def batch_shape(self, batch: int) -> tuple[int, ...]:
        return (int(batch), *self.shape)

    def example(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A deterministic random batch of the right shape and dtype (standard normal for floats)."""
        rng = np.random.default_rng(seed)
        if self.dtype in ("float32", "float16", "bfloat16"):
            return rng.standard_normal(self.batch_shape(batch), dtype=np.float32)
        return rng.integers(0, 128, size=self.batch_shape(batch)).astype(self.dtype)

    def validate(self, array: Any) -> np.ndarray:
        """Check one batch against this spec; return it as a C-contiguous numpy array.

        Raises :class:`InputError` naming the expected and the received shape or dtype.
        """
        if not isinstance(array, np.ndarray):
            raise InputError(f"input {self.name!r} must be a numpy array, got {type(array).__name__}")
        if array.ndim != len(self.shape) + 1 or tuple(array.shape[1:]) != self.shape:
            want = "(N, " + ", ".join(map(str, self.shape)) + ")"
            raise InputError(
                f"input {self.name!r} must have shape {want}, got {tuple(array.shape)}; "
                "resize or reshape the batch to match the model"
            )
        if array.shape[0] < 1:
            raise InputError(f"input {self.name!r} has an empty batch; send at least one sample")
        want_dtype = "float32" if self.dtype == "bfloat16" else self.dtype
        if array.dtype != np.dtype(want_dtype):
            raise InputError(
                f"input {self.name!r} must be {want_dtype}, got {array.dtype}; convert it with .astype({want_dtype!r})"
            )
        return np.ascontiguousarray(array)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(**{**d, "shape": tuple(d["shape"])})

    def with_shape(self, shape: tuple[int, ...]) -> "InputSpec":
        return replace(self, shape=tuple(shape))


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a torchvision name, a ``module:factory`` path, or a file.

    ``source`` forms:
      * ``"resnet50"`` — a torchvision classification model (random weights unless ``weights`` is given)
      * ``"path/to/model.onnx"`` — an ONNX file
      * ``"path/to/model.ts"`` / ``.torchscript`` / ``.pt`` holding TorchScript — a TorchScript file
      * ``"path/to/ckpt.pt"`` / ``.pth`` — a checkpoint: a pickled module, or a state dict plus ``arch``
      * ``"package.module:factory"`` — a Python callable returning an ``nn.Module`` (tests, user code)
    """

    source: str
    weights: str | None = None  # a state-dict file for a torchvision or factory model
    arch: str | None = None  # architecture for a state-dict checkpoint
    num_classes: int | None = None
    input: InputSpec | None = None
    options: dict[str, Any] = field(default_factory=dict)  # factory keyword arguments

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("model must be a name, a file path or module:factory, got an empty string")
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {self.num_classes}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"] = self.input.to_dict() if self.input else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        d = dict(d)
        if d.get("input"):
            d["input"] = InputSpec.from_dict(d["input"])
        return cls(**d)

    @classmethod
    def coerce(cls, spec: "ModelSpec | str") -> "ModelSpec":
        return spec if isinstance(spec, ModelSpec) else cls(source=str(spec))
