"""ResultRow: the one flat record every measurement produces, whatever engine or scenario.

A row carries what was measured (throughput with its spread, latency percentiles), what it was
measured on (the configuration, the machine, the library versions) and how much to trust it (the
fraction of the machine's measured peak, other processes' CPU and a ``noisy`` flag). Failed and
skipped cells are rows too, with ``status`` and a one-line ``error``, so a sweep's report always
renders.

>>> row = ResultRow(model="tiny_cnn", engine="null", precision="fp32")
>>> ResultRow.from_dict(row.to_dict()) == row
True
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .scenarios import ScenarioResult

__all__ = ["SCHEMA_VERSION", "STATUSES", "ResultRow", "new_run_id", "utc_now", "dominant_precision"]

SCHEMA_VERSION = 1
STATUSES = ("ok", "error", "skipped")

# runtime spellings of precisions (OpenVINO's f32/u8, ...) -> effstack's names, for the peak lookup
_PRECISION_NAMES = {"f32": "fp32", "float32": "fp32", "fp32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
                    "f16": "fp16", "fp16": "fp16", "float16": "fp16", "i8": "int8", "u8": "int8", "int8": "int8",
                    "uint8": "int8"}


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with seconds, e.g. ``2026-11-28T10:54:25+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """A short random id shared by the rows of one sweep."""
    return uuid.uuid4().hex[:12]


def dominant_precision(counts: dict[str, int]) -> str | None:
    """The precision most compute operations ran in, normalised (``{"i8": 50, "f32": 3}`` -> ``"int8"``)."""
    if not counts:
        return None
    name, _ = max(counts.items(), key=lambda kv: kv[1])
    return _PRECISION_NAMES.get(str(name).lower())


@dataclass
class ResultRow:
    """One measurement (or one failed or skipped cell), flat and JSON-ready.

    Throughput is samples/s: the median repeat, with ``throughput_min``/``_max`` and
    ``spread_pct`` = (max - min) / median * 100. ``gops`` = 2 * macs_per_sample * throughput / 1e9;
    ``peak_fraction`` = gops / the machine's measured peak for ``peak_precision``, the precision the
    kernels *actually* ran (from ``executed_counts``), not the one requested; ``peak_path`` names where
    that peak came from (a micro-benchmark path such as ``openvino-conv``, or ``observed:<engine>/<model>
    b<batch>`` when a measured row outran them: then that row is the peak, so the fraction is at most 1). ``other_cpu_pct_core``
    is other processes' CPU during the timed part as % of one core; ``noisy`` flags it.
    """

    schema: int = SCHEMA_VERSION
    timestamp: str = field(default_factory=utc_now)
    run_id: str = ""
    # the configuration
    model: str = ""
    model_source: str = ""
    model_fingerprint: str = ""
    macs_per_sample: int | None = None
    params: int | None = None
    engine: str = ""
    precision: str = ""
    executed_precision: str = ""
    executed_counts: dict[str, int] = field(default_factory=dict)
    kernel_isa: str = ""  # the widest ISA the engine's kernels use, read back ("amx", "avx512"; "": cannot tell)
    batch: int = 1
    threads: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    scenario: str = ""
    # what was measured
    duration_s: float | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    queries: int | None = None
    samples: int | None = None
    throughput: float | None = None
    throughput_min: float | None = None
    throughput_max: float | None = None
    spread_pct: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    mean_ms: float | None = None
    target_qps: float | None = None
    achieved_qps: float | None = None
    late: int | None = None
    incomplete: int | None = None
    # how it compares with the machine, and how much to trust it
    gops: float | None = None
    peak_gops: float | None = None
    peak_precision: str | None = None
    peak_path: str | None = None
    peak_fraction: float | None = None
    other_cpu_pct_core: float | None = None
    other_cpu_pct_machine: float | None = None
    noisy: bool | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(f"row status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if "\n" in self.error:  # the report shows one line per row
            self.error = " ".join(self.error.split())

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite floats become None, since JSON has no inf or NaN)."""
        return {k: _json_safe(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResultRow":
        """Rebuild a row; keys this version does not know are ignored (rows from a newer minor version).

        Raises:
            ArtifactError: ``d`` is not a dict or comes from a newer schema version.
        """
        if not isinstance(d, dict):
            raise ArtifactError(f"a result row must be a JSON object, got {type(d).__name__}")
        schema = d.get("schema", SCHEMA_VERSION)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise ArtifactError(
                f"result row schema {schema!r} is newer than this effstack reads ({SCHEMA_VERSION}); upgrade effstack"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def fill(self, result: "ScenarioResult", peak: dict[str, Any] | None = None,
             noisy_threshold_pct: float = 10.0) -> "ResultRow":
        """Copy a scenario's measurements into this row and derive GOP/s, % of peak and ``noisy``.

        ``peak`` is a :func:`effstack.measure.peak.peak_rates` record (None: no peak fraction).
        Returns ``self`` for chaining.
        """
        self.scenario = result.scenario
        self.batch = result.batch
        self.duration_s = result.duration_s
        self.warmup_s = result.warmup_s
        self.queries, self.samples = result.queries, result.samples
        t = result.throughput
        self.throughput, self.throughput_min, self.throughput_max = t.median, t.min, t.max
        self.spread_pct = t.range_pct
        if result.latency is not None:
            lat = result.latency
            self.p50_ms, self.p90_ms, self.p99_ms = lat.p50_ms, lat.p90_ms, lat.p99_ms
            self.p999_ms, self.mean_ms = lat.p999_ms, lat.mean_ms
        self.target_qps, self.achieved_qps = result.target_qps, result.achieved_qps
        self.late, self.incomplete = result.late, result.incomplete
        if self.macs_per_sample and self.throughput is not None:
            self.gops = 2.0 * self.macs_per_sample * self.throughput / 1e9
        self.judge_peak(peak)
        if result.cpu is not None and result.cpu.available:
            self.other_cpu_pct_core = result.cpu.other_pct_core
            self.other_cpu_pct_machine = result.cpu.other_pct_machine
            self.noisy = result.cpu.noisy(noisy_threshold_pct)
        self.status, self.error = "ok", ""
        return self

    def judge_peak(self, peak: dict[str, Any] | None) -> "ResultRow":
        """Set this row's peak (the precision its kernels ran, the peak's GOP/s and path) and its fraction of it,
        from a :func:`effstack.measure.peak.peak_rates` record (None: no peak). A row faster than the record's
        peak is its own peak (``peak_path`` ``observed:...``), so the fraction is at most 1. Returns ``self``.

        Example:
            >>> row = ResultRow(model="m", engine="openvino", precision="int8", batch=8, gops=120.0)
            >>> rec = {"rates": {"int8": {"gops": 100.0, "path": "openvino"}}}
            >>> row.judge_peak(rec).peak_fraction, row.peak_path
            (1.0, 'observed:openvino/m b8')
            >>> rec["rates"]["int8"]["gops"] = 150.0
            >>> row.judge_peak(rec).peak_fraction, row.peak_path
            (0.8, 'openvino')
        """
        from .peak import observed_path, peak_for

        ran = dominant_precision(self.executed_counts) if self.executed_counts else self.precision
        self.peak_precision = ran
        self.peak_gops, self.peak_path = peak_for(ran, peak) if ran else (None, None)
        self.peak_fraction = None
        if self.gops is not None and self.peak_gops and self.gops > self.peak_gops:
            # this row outran every micro-benchmark: a measured rate is a lower bound of the machine's
            # peak, so the row is the peak (named as such) and the fraction stays <= 1 by construction
            self.peak_gops, self.peak_path = self.gops, observed_path(self.engine, self.model, self.batch)
        if self.gops is not None and self.peak_gops:
            self.peak_fraction = self.gops / self.peak_gops
        return self

    def failed(self, status: str, reason: str) -> "ResultRow":
        """Mark this row ``"error"`` or ``"skipped"`` with a one-line reason; returns ``self``."""
        self.status = status
        self.error = " ".join(str(reason).split())[:500]
        self.__post_init__()
        return self


def _json_safe(value: Any) -> Any:
    # engine settings may hold numpy scalars, paths or enums: keep numbers, stringify the rest
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)
