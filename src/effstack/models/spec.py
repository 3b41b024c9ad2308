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
    ``dynamic`` names the sample axes (0 is the first after the batch) whose size may vary from 1 up to
    ``shape``'s: ``InputSpec((128,), dtype="int64", layout="NL", name="input_ids", dynamic=(0,))`` is a batch
    of token ids up to 128 long; exports keep those axes dynamic, and ``shape`` is the size measured by default.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    name: str = "input"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dynamic: tuple[int, ...] = ()
    vocab: int | None = None  # integer inputs (token ids) take values 0..vocab-1

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        dynamic = tuple(sorted({int(a) for a in self.dynamic}))
        object.__setattr__(self, "dynamic", dynamic)
        if any(not 0 <= a < len(shape) for a in dynamic):
            raise ConfigError(f"dynamic axes must index the {len(shape)} sample axes (0..{len(shape) - 1}), "
                              f"got {list(dynamic)}")
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
        return rng.integers(0, self.vocab or 128, size=self.batch_shape(batch)).astype(self.dtype)

    def image_like(self, batch: int = 1, seed: int = 0, grid: int = 7) -> np.ndarray:
        """A deterministic batch of random *image-like* inputs: smooth random fields (a ``grid`` x ``grid``
        random image per channel, bilinearly enlarged) plus a little pixel noise, each sample standardised.

        White noise averages out under a CNN's global pooling, so every sample gets nearly the same pooled
        features and a classifier's top-1 hinges on tiny logit gaps; smooth fields vary at the scales CNN
        features see, so outputs differ between samples, as they do for photographs. Inputs that are not
        float images (C, H, W) with H, W >= 2 * grid get :meth:`example`.
        """
        if self.dtype not in ("float32", "float16", "bfloat16") or len(self.shape) != 3 \
                or min(self.shape[1:]) < 2 * grid:
            return self.example(batch, seed)
        rng = np.random.default_rng(seed)
        c, h, w = self.shape
        x = _enlarge(rng.standard_normal((int(batch), c, grid, grid)).astype(np.float32), h, w)
        x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
        x -= x.mean(axis=(1, 2, 3), keepdims=True)
        return np.ascontiguousarray(x / np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1e-6), dtype=np.float32)

    def validate(self, array: Any) -> np.ndarray:
        """Check one batch against this spec; return it as a C-contiguous numpy array.

        Raises :class:`InputError` naming the expected and the received shape or dtype.
        """
        if not isinstance(array, np.ndarray):
            raise InputError(f"input {self.name!r} must be a numpy array, got {type(array).__name__}")
        if array.ndim != len(self.shape) + 1 or not self.fits(tuple(array.shape[1:])):
            want = "(N, " + ", ".join(f"1..{s}" if a in self.dynamic else str(s)
                                      for a, s in enumerate(self.shape)) + ")"
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

    def fits(self, sample_shape: tuple[int, ...]) -> bool:
        """Whether one sample of ``sample_shape`` is valid: equal on fixed axes, 1..max on dynamic ones."""
        return len(sample_shape) == len(self.shape) and all(
            (1 <= got <= want) if axis in self.dynamic else got == want
            for axis, (got, want) in enumerate(zip(sample_shape, self.shape)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["dynamic"] = list(self.dynamic)
        for key in ("dynamic", "vocab"):  # left out when unset: files read the same as before they existed
            if not d[key]:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(**{**d, "shape": tuple(d["shape"]), "dynamic": tuple(d.get("dynamic", ()))})

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


def _enlarge(g: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (N, C, gh, gw) batch to (N, C, h, w), corners aligned."""
    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.linspace(0.0, n_in - 1.0, n_out)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    y0, y1, wy = axis(h, g.shape[2])
    x0, x1, wx = axis(w, g.shape[3])
    rows = g[:, :, y0, :] * (1 - wy)[:, None] + g[:, :, y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx
