"""``ternarize(model, data, TernaryConfig(...))``: 1.58-bit weights (BitNet b1.58), trained with an STE.

Each Conv/Linear weight ``W`` becomes ``gamma * clip(round(W / gamma), -1, 1)`` with ``gamma = mean(|W|)``
per tensor (absmean scaling, Ma et al. 2024); the forward pass uses the ternary weight, the backward
pass treats the rounding as identity (straight-through estimator), so the float "latent" weights keep
learning. The stem and the head stay 8-bit (BitNet likewise keeps embeddings and head in higher
precision); their fake quantization is the QAT of :mod:`effstack.compress.qat`, shared with
``quantize``, as is the learned 8-bit input range of every layer (LSQ), so training sees the INT8
arithmetic the export runs.

What runs where, honestly: no CPU engine here has ternary kernels. The packed form (2 bits per
weight, or 5 weights per byte in base 3 = 1.6 bits) is what is stored and reported; for execution
:meth:`TernaryResult.export_onnx` writes a QDQ INT8 model whose weights are exactly ``{-q, 0, q}`` per
channel, so ONNX Runtime and OpenVINO run it with their ordinary INT8 kernels (QLinearConv /
MatMulInteger and friends): the size win is real, the speed is INT8's.

>>> from effstack.compress import TernaryConfig, ternarize                  # doctest: +SKIP
>>> r = ternarize(model, (x, y), TernaryConfig(), val=(xv, yv))            # doctest: +SKIP
>>> r.sizes["weights_ratio"]                                             # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..train.config import TrainConfig, config_from_dict
from ..train.loop import TrainResult, fit, sample_inputs, unwrap
from .prune import compute_layers_run

__all__ = ["PACKINGS", "TernaryConfig", "TernaryResult", "pack_ternary", "ternarize", "unpack_ternary"]

PACKINGS = ("2bit", "base3")


@dataclass(frozen=True)
class TernaryConfig:
    """train: the fine-tuning :class:`TrainConfig` (start from a trained float model). skip: module names
    kept at 8 bits; None: the first and the last compute layer. act_bits: 8 fake-quantizes every layer's
    input with a learned range (matches the INT8 export), None leaves activations float.
    packing: ``2bit`` (4 weights per byte) or ``base3`` (5 per byte, 1.6 bits per weight).

    Raises:
        ConfigError: a value out of range.
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, lr=1e-3))
    skip: tuple[str, ...] | None = None
    act_bits: int | None = 8
    packing: str = "2bit"

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if self.skip is not None:
            object.__setattr__(self, "skip", (self.skip,) if isinstance(self.skip, str) else tuple(self.skip))
        if self.act_bits not in (8, None):
            raise ConfigError(f"act_bits must be 8 or None (float activations), got {self.act_bits!r}")
        if self.packing not in PACKINGS:
            raise ConfigError(f"packing must be one of {', '.join(PACKINGS)}, got {self.packing!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TernaryConfig:
        d = dict(d)
        if d.get("skip") is not None:
            d["skip"] = tuple(d["skip"])
        return config_from_dict(cls, d, "ternary", {"train": TrainConfig})


# --- packing ------------------------------------------------------------------------------------


def pack_ternary(codes: np.ndarray, packing: str = "2bit") -> bytes:
    """Pack ternary codes ``{-1, 0, 1}`` into bytes: ``2bit`` (4 per byte) or ``base3`` (5 per byte).

    Raises:
        InputError: a code outside {-1, 0, 1}. ConfigError: an unknown packing.

    >>> len(pack_ternary(np.array([1, 0, -1, 1, 1], np.int8), "2bit")), len(pack_ternary(np.ones(5, np.int8), "base3"))
    (2, 1)
    """
    c = np.asarray(codes).reshape(-1).astype(np.int16)
    if c.size and (c.min() < -1 or c.max() > 1):
        raise InputError(f"ternary codes must be -1, 0 or 1, got values in [{c.min()}, {c.max()}]")
    digits = (c + 1).astype(np.uint8)  # {0, 1, 2}
    if packing == "2bit":
        digits = np.pad(digits, (0, -len(digits) % 4)).reshape(-1, 4)
        return (digits << np.array([0, 2, 4, 6], np.uint8)).sum(1, dtype=np.uint8).tobytes()
    if packing == "base3":
        digits = np.pad(digits, (0, -len(digits) % 5)).reshape(-1, 5).astype(np.uint16)
        return (digits * np.array([1, 3, 9, 27, 81], np.uint16)).sum(1).astype(np.uint8).tobytes()
    raise ConfigError(f"packing must be one of {', '.join(PACKINGS)}, got {packing!r}")


def unpack_ternary(data: bytes, n: int, packing: str = "2bit") -> np.ndarray:
    """The first ``n`` ternary codes (int8 in {-1, 0, 1}) of bytes written by :func:`pack_ternary`."""
    b = np.frombuffer(data, np.uint8)
    if packing == "2bit":
        digits = (b[:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
    elif packing == "base3":
        digits = (b[:, None] // np.array([1, 3, 9, 27, 81], np.uint8)) % 3
    else:
        raise ConfigError(f"packing must be one of {', '.join(PACKINGS)}, got {packing!r}")
    return digits.reshape(-1)[:n].astype(np.int8) - 1


# --- the layers ---------------------------------------------------------------------------------


def _ternary(w: Any) -> tuple[Any, Any]:
    """(codes in {-1, 0, 1}, gamma): absmean scaling of one weight tensor."""
    gamma = w.abs().mean().clamp_min(1e-8)
    return (w / gamma).round().clamp(-1, 1), gamma


def _ternary_layer_class() -> Any:
    from torch import nn

    from .qat import _modules

    FakeQuantInput = _modules()[0]

    class TernaryLayer(nn.Module):
        """A Conv/Linear with absmean-ternary weights (STE) and, optionally, an 8-bit LSQ input."""

        def __init__(self, layer: nn.Module, sample: Any, act_bits: int | None):
            super().__init__()
            self.layer = layer
            self.act = FakeQuantInput(sample) if act_bits else None

        def forward(self, x: Any) -> Any:
            w = self.layer.weight
            codes, gamma = _ternary(w)
            wq = w + (codes * gamma - w).detach()  # straight-through: forward ternary, backward identity
            if self.act is not None:
                x = self.act(x)
            if isinstance(self.layer, nn.Linear):
                return nn.functional.linear(x, wq, self.layer.bias)
            return self.layer._conv_forward(x, wq, self.layer.bias)

    return TernaryLayer


@dataclass
class TernaryResult:
    """The trained model (float module whose ternary layers hold exactly ``gamma * codes``), the codes,
    the sizes, and the training record.

    sizes: ``weights_fp32_bytes`` (every Conv/Linear weight at 4 bytes), ``weights_packed_bytes`` (ternary
    codes packed + one fp32 scale per tensor; skipped layers at 1 byte per weight + a per-channel fp32
    scale), ``weights_ratio``, ``other_bytes`` (biases, norms: fp32 in both), ``bits_per_weight``
    (ternary layers only), ``ternary_weights`` and ``int8_weights`` counts.
    """

    model: Any
    codes: dict[str, tuple[np.ndarray, float]]  # layer name -> (int8 codes shaped like the weight, gamma)
    sizes: dict[str, Any]
    config: TernaryConfig
    train: TrainResult
    ternary_layers: list[str] = field(default_factory=list)
    int8_layers: list[str] = field(default_factory=list)

    def packed(self) -> dict[str, bytes]:
        """Each ternary layer's packed codes (its scale is ``codes[name][1]``)."""
        return {n: pack_ternary(c, self.config.packing) for n, (c, _) in self.codes.items()}

    def export_onnx(self, calibration: np.ndarray, input_spec: Any = None, name: str = "ternary") -> Path:
        """A QDQ INT8 ONNX file: ternary weights as int8 ``{-q, 0, q}`` per channel, 8-bit activations.

        Runs on ONNX Runtime / OpenVINO INT8 kernels (no engine here has ternary kernels).

        Raises:
            InputError: no calibration samples, or a shape that does not fit.
            EngineError: ONNX Runtime's quantizer failed.
        """
        from ..models.spec import InputSpec
        from .calibrate import Calibration
        from .prune import as_loaded

        x = np.asarray(calibration, dtype=np.float32)
        if x.ndim < 2 or len(x) == 0:
            raise InputError(f"calibration must be a batch (N, ...) with N >= 1, got shape {x.shape}")
        spec = input_spec or getattr(self.model, "input_spec", None) or InputSpec(shape=x.shape[1:])
        # reduce_range off: ternary codes are exact at any 8-bit grid, and activations were trained for 8 bits
        return Calibration(as_loaded(self.model, spec, name), x, per_channel=True, reduce_range=False,
                           methods=("minmax",)).build("minmax")

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "sizes": self.sizes, "ternary_layers": self.ternary_layers,
                "int8_layers": self.int8_layers, "train": self.train.to_dict()}


def _sizes(module: Any, codes: dict[str, tuple[np.ndarray, float]], int8: list[str], packing: str) -> dict[str, Any]:
    import torch

    layers = {n: m for n, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))}
    weight_ids = {id(m.weight) for m in layers.values()}
    fp32 = sum(m.weight.numel() for m in layers.values()) * 4
    per = 1.6 if packing == "base3" else 2.0
    n_t = sum(c.size for c, _ in codes.values())
    packed = sum(-(-c.size * 2 // 8) if packing == "2bit" else -(-c.size // 5) for c, _ in codes.values())
    packed += 4 * len(codes)  # one fp32 gamma per tensor
    n_8 = sum(layers[n].weight.numel() for n in int8)
    packed += n_8 + 4 * sum(layers[n].weight.shape[0] for n in int8)
    other = sum(p.numel() for p in module.parameters() if id(p) not in weight_ids) * 4
    return {"weights_fp32_bytes": fp32, "weights_packed_bytes": packed, "weights_ratio": round(packed / fp32, 4),
            "other_bytes": other, "total_ratio": round((packed + other) / (fp32 + other), 4),
            "bits_per_weight": per, "ternary_weights": n_t, "int8_weights": n_8, "packing": packing}


def ternarize(model: Any, data: Any, config: TernaryConfig | None = None, *, val: Any = None) -> TernaryResult:
    """Fine-tune a copy of ``model`` with ternary weights (absmean, STE); return it with sizes and codes.

    Args:
        model: a trained ``nn.Module`` or LoadedModel (not modified).
        data: labelled ``(x, y)`` or a Dataset (the shared loop's forms).
        config: :class:`TernaryConfig`.
        val: ``(x, y)`` scored after each epoch.

    Raises:
        ConfigError: a bad config, a name in ``skip`` that is not a compute layer, or nothing to ternarize.
        InputError: malformed data.

    Example:
        >>> r = ternarize(net, (x, y), TernaryConfig(train=TrainConfig(epochs=8)), val=(xv, yv))  # doctest: +SKIP
        >>> onnx_path = r.export_onnx(x[:128])                                               # doctest: +SKIP
    """
    import torch

    from .qat import _modules, _swap

    config = config or TernaryConfig()
    if not isinstance(config, TernaryConfig):
        raise ConfigError(f"config must be a TernaryConfig, got {type(config).__name__}")
    module = copy.deepcopy(unwrap(model)).eval()
    sample = sample_inputs(data, 256)
    order = compute_layers_run(module, sample[:2])
    names = {id(m): n for n, m in module.named_modules()}
    run_names = [names[id(m)] for m in order]
    skip = config.skip if config.skip is not None else tuple(dict.fromkeys(run_names[:1] + run_names[-1:]))
    unknown = [s for s in skip if s not in run_names]
    if unknown:
        raise ConfigError(f"skip names {unknown[0]!r}, which is not a compute layer; use one of {', '.join(run_names)}")
    tern = [n for n in run_names if n not in skip]
    if not tern:
        raise ConfigError("no layer is left to ternarize; skip fewer layers (skip=() ternarizes all)")
    inputs: dict[int, Any] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(id(m), a[0].detach())) for m in order]
    with torch.no_grad():
        module(sample)
    for h in hooks:
        h.remove()
    _, QatLayer, Clamped = _modules()
    TernaryLayer = _ternary_layer_class()
    by_name = dict(module.named_modules())
    tern_ids = {id(by_name[n]) for n in tern}
    skip_ids = {id(m) for m in order} - tern_ids
    act = config.act_bits
    _swap(module, lambda m: id(m) in tern_ids or (act and id(m) in skip_ids),
          lambda name, m: TernaryLayer(m, inputs[id(m)], act) if id(m) in tern_ids else QatLayer(m, inputs[id(m)], 8))
    result = fit(module, data, config.train, val=val, label="ternary")
    codes_by_id: dict[int, tuple[np.ndarray, float]] = {}
    with torch.no_grad():  # bake the ternary weights in, and each learned input range as a clamp
        for m in module.modules():
            if isinstance(m, TernaryLayer):
                codes, gamma = _ternary(m.layer.weight)
                m.layer.weight.copy_(codes * gamma)
                codes_by_id[id(m.layer)] = (codes.numpy().astype(np.int8), float(gamma))
    _swap(module, lambda m: isinstance(m, (TernaryLayer, QatLayer)),
          lambda name, m: Clamped(m.layer, *m.act.bounds()) if m.act is not None else m.layer)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if hasattr(unwrap(model), "input_spec"):
        module.input_spec = unwrap(model).input_spec
    final_names = {id(m): n for n, m in module.named_modules()}  # a Clamped wrapper adds ".layer"
    codes_out = {final_names[id(m)]: codes_by_id[id(m)] for m in order if id(m) in tern_ids}
    int8 = [final_names[id(m)] for m in order if id(m) in skip_ids]
    sizes = _sizes(module, codes_out, int8, config.packing)
    return TernaryResult(module, codes_out, sizes, config, result, list(codes_out), int8)
