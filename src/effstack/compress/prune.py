"""``prune(model, example_input, PruneConfig(...), data)``: structural channel pruning to a FLOPs target.

Channels are really removed (torch-pruning rewrites every coupled layer: convolutions, BatchNorm,
residual adds, the next layer's inputs), so the exported ONNX model is smaller and faster, not masked.
The loop is iterative: ``steps`` rounds, each removing the least important channels (L2 norm of the
coupled group, by default) until the round's MACs goal is met, then fine-tuning with the shared
training loop. The layer producing the output (the classifier) and the layers named in ``ignore`` keep
their output channels.

>>> from effstack.compress import PruneConfig, prune                                     # doctest: +SKIP
>>> r = prune(model, x[:1], PruneConfig(target_flops_ratio=0.5, steps=3), (x, y))         # doctest: +SKIP
>>> r.macs_after / r.macs_before                                                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np

from .._optional import require
from ..errors import ConfigError, InputError, one_line
from ..train.config import TrainConfig, config_from_dict
from ..train.loop import TrainResult, fit, unwrap

__all__ = ["IMPORTANCES", "PruneConfig", "PruneResult", "as_loaded", "compute_layers_run", "mac_counter",
           "prune"]

IMPORTANCES = ("l2", "l1", "fpgm")
_FINE_STEPS = 100  # pruning sub-steps available to reach the goals (each removes ~0.9 % of channels)
_MAX_RATIO = 0.9  # at most this fraction of any layer's channels is removed


@dataclass(frozen=True)
class PruneConfig:
    """target_flops_ratio: keep this fraction of the MACs (0.5: half the compute), in (0, 1).
    steps: prune/fine-tune rounds (the goal falls linearly to the target). finetune: the
    :class:`TrainConfig` of each round's fine-tuning (None: prune only, no data needed).
    importance: ``l2`` | ``l1`` (group weight norm) | ``fpgm`` (geometric median). ignore: module names
    (as in ``named_modules``) whose output channels are kept; the output layer is always kept.
    round_to: keep channel counts a multiple of this (SIMD-friendly), or None. global_pruning: rank
    channels across layers instead of the same fraction per layer.

    Raises:
        ConfigError: a value out of range.
    """

    target_flops_ratio: float = 0.5
    steps: int = 3
    finetune: TrainConfig | None = field(default_factory=lambda: TrainConfig(epochs=2))
    importance: str = "l2"
    ignore: tuple[str, ...] = ()
    round_to: int | None = None
    global_pruning: bool = False

    def __post_init__(self) -> None:
        r = self.target_flops_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise ConfigError(f"target_flops_ratio must be in (0, 1) (the MACs kept), got {r!r}; 0.5 halves them")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.finetune is not None and not isinstance(self.finetune, TrainConfig):
            raise ConfigError(f"finetune must be a TrainConfig or None, got {type(self.finetune).__name__}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        if isinstance(self.ignore, str):
            object.__setattr__(self, "ignore", (self.ignore,))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        if self.round_to is not None and (isinstance(self.round_to, bool) or int(self.round_to) < 1):
            raise ConfigError(f"round_to must be a positive integer or None, got {self.round_to!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PruneConfig:
        d = dict(d)
        if "ignore" in d:
            d["ignore"] = tuple(d["ignore"])
        return config_from_dict(cls, d, "prune", {"finetune": TrainConfig})


@dataclass
class PruneResult:
    """The pruned module (a new one; the input model is untouched) and what it costs before/after."""

    model: Any
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    finetune: list[TrainResult] = field(default_factory=list)

    @property
    def flops_ratio(self) -> float:
        return self.macs_after / self.macs_before

    def to_dict(self) -> dict[str, Any]:
        return {"macs_before": self.macs_before, "macs_after": self.macs_after, "params_before": self.params_before,
                "params_after": self.params_after, "flops_ratio": round(self.flops_ratio, 4), "rounds": self.rounds}

    def table(self) -> str:
        lines = [f"{'round':>5} {'MACs':>12} {'ratio':>6} {'params':>9} {'val top-1':>9}"]
        for r in self.rounds:
            val = f"{r['val_top1']:9.2f}" if r.get("val_top1") is not None else f"{'-':>9}"
            lines.append(f"{r['round']:>5} {r['macs']:>12,} {r['macs'] / self.macs_before:6.3f} {r['params']:>9,} {val}")
        return "\n".join(lines)


def _trace_layers(module: Any, x: Any) -> list[tuple[Any, Any]]:
    """Run ``module`` on ``x`` once; return (layer, output) for each Conv/Linear call, in order."""
    import torch

    seen: list[tuple[Any, Any]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, o))) for m in module.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def compute_layers_run(module: Any, x: Any) -> list[Any]:
    """The Linear/Conv layers in the order a forward pass on ``x`` runs them (first: the stem, last: the head)."""
    return list(dict.fromkeys(m for m, _ in _trace_layers(module, x)))


def mac_counter(module: Any, x: Any) -> Callable[[], tuple[int, int]]:
    """A function giving (MACs of the Conv/Linear layers per sample, parameter count) as channels go.

    One forward pass records each layer's output positions per channel (channel pruning never changes
    them); afterwards the count is arithmetic on the current layer shapes. Running the model instead
    would cost a oneDNN kernel compilation per new shape, i.e. per pruning sub-step.
    """
    positions: dict[int, int] = {}
    layers: dict[int, Any] = {}
    for m, out in _trace_layers(module, x):  # out: (N, C, ...) or (N, ..., features)
        channels = m.out_features if hasattr(m, "out_features") else m.out_channels
        positions[id(m)] = positions.get(id(m), 0) + out.numel() // (out.shape[0] * channels)
        layers[id(m)] = m

    def count() -> tuple[int, int]:
        macs = sum(positions[i] * m.weight.numel() for i, m in layers.items())  # weight: out * in/groups * k
        return int(macs), sum(p.numel() for p in module.parameters())

    return count


def _importance(tp: Any, name: str) -> Any:
    if name == "fpgm":
        return tp.importance.FPGMImportance(p=2)
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def _example(model: Any, example_input: Any) -> Any:
    import torch

    if example_input is None:
        inp = getattr(model, "input", None) or getattr(unwrap(model), "input_spec", None)
        if inp is None:
            raise InputError("prune needs an example input; pass example_input=x[:1] (one batch of the model's input)")
        example_input = inp.example(1)
    x = torch.as_tensor(np.asarray(example_input, dtype=np.float32))
    if x.dim() < 2:
        raise InputError(f"example_input must be a batch (N, ...), got shape {tuple(x.shape)}; use x[:1]")
    return x


def prune(model: Any, example_input: Any = None, config: PruneConfig | None = None, data: Any = None, *,
          val: Any = None, teacher: Any = None, temperature: float = 4.0) -> PruneResult:
    """Remove channels from a copy of ``model`` until its MACs are ``target_flops_ratio`` of the original.

    Args:
        model: an ``nn.Module`` or LoadedModel (not modified).
        example_input: one input batch (numpy or tensor); None uses the LoadedModel's input spec.
        config: :class:`PruneConfig`.
        data: ``(x, y)`` or a Dataset for fine-tuning after each round (needed unless ``finetune=None``);
            with ``teacher``, inputs alone (``x`` or ``(x, None)``) are enough.
        val: ``(x, y)`` scored after each round.
        teacher: fine-tune by distillation from this module (e.g. the unpruned model itself, ``teacher=model``)
            instead of on labels: the pruned copy learns to give the outputs the original gave, on
            unlabelled images (labels, when ``data`` has them, get weight 0.1).
        temperature: the distillation temperature.

    Raises:
        MissingDependencyError: torch-pruning is not installed (``pip install 'effstack[shrink]'``).
        ConfigError: a bad config, fine-tuning without data, or a name in ``ignore`` that is not a module.
        InputError: the example input does not fit the model, or malformed data.

    Example:
        >>> r = prune(net, x[:1], PruneConfig(0.5, steps=3, finetune=TrainConfig(epochs=2)), (x, y))  # doctest: +SKIP
    """
    import torch

    tp = require("torch_pruning", "structural pruning")
    config = config or PruneConfig()
    if not isinstance(config, PruneConfig):
        raise ConfigError(f"config must be a PruneConfig, got {type(config).__name__}")
    if config.finetune is not None and data is None:
        raise ConfigError("pruning with fine-tuning needs training data; pass data=(x, y) or finetune=None")
    x = _example(model, example_input)
    module = copy.deepcopy(unwrap(model)).eval()
    for p in module.parameters():  # torch-pruning traces the graph through autograd; a loaded model is frozen
        p.requires_grad_(True)
    names = dict(module.named_modules())
    missing = [n for n in config.ignore if n not in names]
    if missing:
        raise ConfigError(f"ignore names {missing[0]!r}, which is not a module of the model; use a name "
                          f"from named_modules(), e.g. {', '.join(list(names)[1:4])}")
    try:
        count = mac_counter(module, x)
        macs0, params0 = count()
    except RuntimeError as exc:
        raise InputError(f"the model rejects example_input of shape {tuple(x.shape)}: {one_line(exc, 160)}") from None
    loss_fn = None
    if teacher is not None:
        from .distill import distillation_loss

        t_mod = unwrap(teacher, "teacher")
        if t_mod is module:
            raise ConfigError("the teacher must not be the module being pruned; pass the original model")
        t_mod.eval()
        labelled = isinstance(data, (tuple, list)) and len(data) == 2 and data[1] is not None
        loss_fn = distillation_loss(t_mod, temperature, 0.9 if labelled else 1.0)
    ignored = compute_layers_run(module, x)[-1:] + [names[n] for n in config.ignore]
    pruner = tp.pruner.MetaPruner(
        module, x, importance=_importance(tp, config.importance), global_pruning=config.global_pruning,
        pruning_ratio=_MAX_RATIO, max_pruning_ratio=_MAX_RATIO, iterative_steps=_FINE_STEPS,
        ignored_layers=ignored, round_to=config.round_to)
    result = PruneResult(module, macs0, macs0, params0, params0)
    macs, params, sub = macs0, params0, 0
    for k in range(1, config.steps + 1):
        goal = macs0 * (1 - (1 - config.target_flops_ratio) * k / config.steps)
        while macs > goal and sub < _FINE_STEPS:
            with torch.no_grad():
                pruner.step()
            sub += 1
            macs, params = count()
        row: dict[str, Any] = {"round": k, "macs": macs, "params": params, "goal_macs": int(goal),
                               "reached": macs <= goal}
        if config.finetune is not None:
            ft = dataclasses.replace(config.finetune, seed=config.finetune.seed + k, resume=False,
                                     checkpoint_dir=None)
            tr = fit(module, data, ft, val=val, label=f"prune {k}/{config.steps}", loss_fn=loss_fn)
            result.finetune.append(tr)
            row["val_top1"] = tr.val_top1
        elif val is not None:
            from ..train.loop import evaluate

            row["val_top1"] = evaluate(module, val)
        result.rounds.append(row)
    for p in module.parameters():
        p.requires_grad_(False)
    if hasattr(unwrap(model), "input_spec"):
        module.input_spec = unwrap(model).input_spec
    result.model, result.macs_after, result.params_after = module.eval(), macs, params
    return result


def as_loaded(module: Any, input_spec: Any, name: str) -> Any:
    """Wrap a trained/pruned module as a :class:`~effstack.models.LoadedModel` (for export and engines).

    Example:
        >>> path = export_onnx(as_loaded(r.model, InputSpec((1, 32, 32)), "pruned"))  # doctest: +SKIP
    """
    from ..models.loader import from_module

    return from_module(module, input_spec, name, source=name)
