"""ServingConfig: how one model is served — engine, batching, instances, limits — as a dataclass a bundle can carry.

Precedence is flag > file > default: :meth:`ServingConfig.merged` lays explicitly given values over a
config read from a file (``serving.json``), whose values lie over the dataclass defaults.

>>> c = ServingConfig(model="effstack.testing:tiny_mlp", engine="null", max_batch=4)
>>> ServingConfig.from_dict(c.to_dict()) == c
True
>>> c.merged({"max_batch": 16}).max_batch
16
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..engines.base import PRECISIONS, available_cores
from ..errors import ConfigError
from ..models.spec import ModelSpec
from .batcher import MAX_HORIZON, BatchingPolicy

__all__ = ["AUTO", "RELOADABLE", "ServingConfig", "parse_duration_ms"]

AUTO = "auto"  # instances: pick the layout at load

# settings a client may change through POST /v2/repository/models/{name}/load (never what code or files run)
RELOADABLE = ("max_batch", "max_queue_delay_ms", "latency_budget_ms", "instances", "threads", "queue_capacity",
              "admission_horizon", "timeout_ms", "priority_levels", "inline_below_ms", "length_buckets")

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s)?\s*$")


def parse_duration_ms(text: str | float) -> float:
    """``"50ms"``, ``"0.05s"``, ``"500us"`` or a bare number of milliseconds -> milliseconds.

    Raises:
        ConfigError: not a non-negative duration.

    Example:
        >>> parse_duration_ms("0.05s"), parse_duration_ms("50"), parse_duration_ms("250us")
        (50.0, 50.0, 0.25)
    """
    if isinstance(text, (int, float)):
        value, unit = float(text), "ms"
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ConfigError(f"a duration must look like 50ms, 0.05s or 500us, got {text!r}")
        value, unit = float(m.group(1)), m.group(2) or "ms"
    if value < 0:
        raise ConfigError(f"a duration must not be negative, got {text!r}")
    return value * {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}[unit]


@dataclass(frozen=True)
class ServingConfig:
    """One model's serving settings.

    model: what to load (a :class:`~effstack.models.ModelSpec` or its source string).
    name: the protocol name (default: the model's name).
    engine: an engine name, or ``auto`` (OpenVINO, else ONNX Runtime, else torch).
    precision, knobs: as for ``effstack bench``.
    max_batch: the largest batch in samples; every size 1..max_batch is warmed up at load.
    max_queue_delay_ms: how long a batch may wait to fill (default 0 without a budget).
    latency_budget_ms: p99 target; turns on latency-budget batching and budget-sized admission.
    latency_curve_ms: p99 compute milliseconds per batch size; measured at load when absent.
    instances: engine sessions per model; ``threads`` (total, default all cores) is split between them.
        ``"auto"``: at load, try 1, 2, 4, ... instances (up to the threads), measure each layout's curve and
        keep the one that sustains the highest rate: with a budget, the batcher simulated on the curve under
        Poisson load (:func:`~effstack.serve.simulate.max_rate`); without one, the curve's best throughput.
    queue_capacity: samples that may wait before requests get 503.
    admission_horizon: with a budget, admit a request while it is predicted to finish within this many budgets
        (1: refuse whatever would miss the budget; e.g. 2 lets the queue absorb Poisson bursts when the budget is
        judged on p99, as MLPerf's Server scenario judges it); at most 10.
    timeout_ms: default per-request timeout (a request's ``timeout`` parameter overrides it).
    priority_levels: request priorities 1..N (1 most urgent; requests without one get N).
    inline_below_ms: batches predicted to compute in at most this long run on the event loop's thread
        (a thread hand-off costs more than they do); 0 sends every batch to its instance's thread.
    length_buckets: text models: ``"auto"`` (powers of two from 16 up to the max length), ``"off"`` (one FIFO
        queue, each batch padded to its longest text) or a list of token counts; requests are batched only
        with others of their length bucket (:mod:`effstack.serve.batcher`). Ignored for other models.
    text: how to tokenise for a text model whose file does not say (a bundle's ``model.onnx``):
        ``{"tokenizer": folder with tokenizer.json (relative to the serving.json), "max_length": tokens,
        "pad_id": 0}``. Text models loaded from their Hugging Face folder need none.

    Raises:
        ConfigError: a value out of range.
    """

    model: ModelSpec | str | None = None
    name: str | None = None
    engine: str = "auto"
    precision: str = "fp32"
    knobs: dict[str, Any] = field(default_factory=dict)
    max_batch: int = 8
    max_queue_delay_ms: float | None = None
    latency_budget_ms: float | None = None
    latency_curve_ms: dict[int, float] | None = None
    instances: int | str = 1
    threads: int | None = None
    queue_capacity: int = 256
    admission_horizon: float = 1.0
    timeout_ms: float | None = None
    priority_levels: int = 1
    inline_below_ms: float = 0.1
    length_buckets: list[int] | str = AUTO
    text: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.length_buckets, str):
            if self.length_buckets not in (AUTO, "off"):
                raise ConfigError(f"length buckets must be 'auto', 'off' or a list of token counts, "
                                  f"got {self.length_buckets!r}")
        elif (not isinstance(self.length_buckets, (list, tuple)) or not self.length_buckets
              or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in self.length_buckets)):
            raise ConfigError(f"length buckets must be 'auto', 'off' or a list of token counts >= 1, "
                              f"got {self.length_buckets!r}")
        else:
            object.__setattr__(self, "length_buckets", sorted(set(self.length_buckets)))
        if self.text is not None and not isinstance(self.text, dict):
            raise ConfigError(f"text must be a mapping (tokenizer, max_length, pad_id), got {type(self.text).__name__}")
        if isinstance(self.model, str):
            object.__setattr__(self, "model", ModelSpec(self.model))
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", self.name):
            raise ConfigError(f"model name must be 1-128 letters, digits, '_', '.' or '-', got {self.name!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for key in ("max_batch", "instances", "queue_capacity", "priority_levels", "threads"):
            value = getattr(self, key)
            if (value is None and key == "threads") or (value == AUTO and key == "instances"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                also = " or 'auto'" if key == "instances" else ""
                raise ConfigError(f"{key.replace('_', ' ')} must be an integer of at least 1{also}, got {value!r}")
        for key in ("max_queue_delay_ms", "latency_budget_ms", "timeout_ms", "inline_below_ms"):
            value = getattr(self, key)
            if value is None and key != "inline_below_ms":  # inline_below_ms has no "unset": 0 turns it off
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (key in ("latency_budget_ms", "timeout_ms") and value == 0):
                raise ConfigError(f"{key.replace('_', ' ')} must be a positive number of milliseconds, got {value!r}")
        h = self.admission_horizon
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 1 <= h <= MAX_HORIZON:
            raise ConfigError(f"admission horizon must be a number of budgets within 1..{MAX_HORIZON:g}, got {h!r}")
        if not isinstance(self.knobs, dict):
            raise ConfigError(f"knobs must be a mapping of engine settings, got {type(self.knobs).__name__}")
        if not isinstance(self.engine, str) or not self.engine:
            raise ConfigError(f"engine must be an engine name or 'auto', got {self.engine!r}")
        if self.latency_curve_ms is not None:
            try:
                curve = {int(b): float(v) for b, v in dict(self.latency_curve_ms).items()}
            except (TypeError, ValueError):
                raise ConfigError(
                    f"latency curve must map batch sizes to milliseconds, got {self.latency_curve_ms!r}") from None
            object.__setattr__(self, "latency_curve_ms", curve)
            if self.instances == AUTO:
                raise ConfigError("a given latency curve fits one instance layout: give --instances a number, "
                                  "or drop the curve to let 'auto' measure each layout")

    # --- derived ------------------------------------------------------------------------------------

    def threads_per_instance(self) -> int:
        """The total threads (default: the cores this process may use) split evenly between instances."""
        return max(1, self.total_threads() // self.instance_count())

    def total_threads(self) -> int:
        """The compute threads of all instances together (default: the cores this process may use)."""
        return self.threads or available_cores()

    def instance_count(self) -> int:
        """The number of instances (``auto`` counts as 1 until the load picks a layout)."""
        return 1 if self.instances == AUTO else int(self.instances)

    def instance_layouts(self) -> list[int]:
        """The instance counts to try: the configured one, or for ``auto`` 1, 2, 4, ... up to the threads."""
        if self.instances != AUTO:
            return [int(self.instances)]
        counts, n = [], 1
        while n <= self.total_threads():
            counts.append(n)
            n *= 2
        return counts

    def policy(self, curve_s: dict[int, float] | None = None, length_buckets: tuple[int, ...] = ()) -> BatchingPolicy:
        """The :class:`BatchingPolicy` for these settings; ``curve_s`` (seconds) is the curve measured at load,
        ``length_buckets`` the resolved edges of a text model (:func:`~effstack.serve.text.resolve_buckets`).

        Raises:
            ConfigError: a latency budget without any curve.
        """
        curve = curve_s
        if curve is None and self.latency_curve_ms:
            curve = {b: ms / 1e3 for b, ms in self.latency_curve_ms.items()}
        return BatchingPolicy(
            max_batch=self.max_batch,
            max_queue_delay_s=None if self.max_queue_delay_ms is None else self.max_queue_delay_ms / 1e3,
            latency_budget_s=None if self.latency_budget_ms is None else self.latency_budget_ms / 1e3,
            latency_curve=curve,
            queue_capacity=self.queue_capacity,
            admission_horizon=float(self.admission_horizon),
            instances=self.instance_count(),
            priority_levels=self.priority_levels,
            length_buckets=tuple(length_buckets),
        )

    # --- round trips --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict() if isinstance(self.model, ModelSpec) else None
        if self.latency_curve_ms is not None:
            d["latency_curve_ms"] = {str(b): v for b, v in sorted(self.latency_curve_ms.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServingConfig:
        """Build from a dict (as written by :meth:`to_dict` or a ``serving.json``).

        Raises:
            ConfigError: unknown keys or bad values.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a serving config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown serving settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        d = dict(d)
        model = d.get("model")
        if isinstance(model, dict):
            try:
                d["model"] = ModelSpec.from_dict(model)
            except TypeError as exc:
                raise ConfigError(f"bad model spec in serving config: {exc}") from None
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"bad serving config: {exc}") from None

    def merged(self, overrides: dict[str, Any]) -> ServingConfig:
        """A copy with the non-None ``overrides`` applied (flag > file > default).

        Raises:
            ConfigError: an unknown setting or a bad value.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown serving settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def read(cls, path: str | Path) -> ServingConfig:
        """Read a ``serving.json``; a relative model path is taken relative to the file's folder.

        Raises:
            ArtifactError: the file is missing or not JSON.
            ConfigError: its settings are invalid.
        """
        from ..report.jsonio import read_json

        path = Path(path)
        config = cls.from_dict(read_json(path, "serving config"))
        spec = config.model
        if isinstance(spec, ModelSpec):
            local = path.parent / spec.source
            if not Path(spec.source).is_absolute() and local.exists():
                config = replace(config, model=replace(spec, source=str(local)))
        if config.text and isinstance(config.text.get("tokenizer"), str):
            local = path.parent / config.text["tokenizer"]
            if not Path(config.text["tokenizer"]).is_absolute() and local.exists():
                config = replace(config, text={**config.text, "tokenizer": str(local)})
        return config
