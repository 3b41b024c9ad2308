"""``quantize(model, config, data)``: static INT8 with an accuracy guarantee and proof that it is faster.

Steps (each recorded in the :class:`QuantizeResult`):

1. Run the float model on the user's data (or a synthetic set) on the chosen engine: the reference.
2. Calibrate once (:class:`~effstack.compress.calibrate.Calibration`) and build a QDQ INT8 model with the
   configured method; with ``try_methods`` the other methods too (no second float run).
3. Score it: top-1 against labels when given, else top-1 agreement with fp32 (classifiers) or recall@10
   of neighbours (embedding models). Pass when the drop is within ``max_drop`` (points, or ``"1%"``).
4. If nothing passes: the per-layer sensitivity table, then keep the most sensitive layers in float
   one more at a time until it passes or the time budget runs out.
5. Speed guard: the passing INT8 model must run ``speedup_min`` × faster than the best float
   configuration of the same engine at the same batch, else it is rejected naming the layers that did
   not run in INT8 and the float configuration that wins. A rejected model has no ``model_path``.

The same QDQ ONNX file runs on ONNX Runtime (QLinearConv kernels) and OpenVINO (FakeQuantize -> INT8).

>>> from effstack.compress import QuantizeConfig, quantize                      # doctest: +SKIP
>>> r = quantize(model, QuantizeConfig(engine="openvino", max_drop="1"), (x, y))  # doctest: +SKIP
>>> r.accepted, r.reason                                                      # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..engines.base import SessionOptions, run_batches
from ..errors import ConfigError, EffstackError, InputError
from ..evaluate.accuracy import check_labels, cosine_similarity, parse_max_drop, score, snr_db
from .calibrate import METHODS, Calibration
from .guard import Measure, float_configs, float_layers, offline_measure, speed_verdict
from .sensitivity import LayerSensitivity, layer_sensitivity, run_onnx

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loader import LoadedModel

__all__ = ["ENGINES", "TASKS", "QuantizeConfig", "QuantizeResult", "quantize"]

ENGINES = ("onnxruntime", "openvino")
TASKS = ("classification", "embedding")
TRANSFORMER_OPS = ("MatMul", "Gemm")  # what a transformer's INT8 build quantizes (see Calibration's op_types)


def is_transformer(model: Any) -> bool:
    """Whether ``model`` takes token ids (a text encoder): then only its matrix products are quantized."""
    return getattr(getattr(model, "input", None), "vocab", None) is not None or "text" in getattr(model, "meta", {})


@dataclass(frozen=True)
class QuantizeConfig:
    """What to try and what to accept.

    engine: ``onnxruntime`` or ``openvino``. method: ``minmax`` | ``entropy`` | ``percentile``.
    samples: calibration samples drawn (seeded) from the data. max_drop: ``"1.0"`` points or ``"1%"``
    relative to fp32. speedup_min: INT8 vs best float factor (0 disables the rejection, not the
    measurement). time_budget_s: stop trying fallbacks after this. batch/threads: the speed check's.
    task: ``classification`` or ``embedding``. try_methods: also try the other calibration methods.
    fallback: keep sensitive layers float when needed (at most ``max_float_layers``; None: any).
    sensitivity_samples: inputs the per-layer sensitivity pass runs on (one run per compute layer, so a
    big model's pass costs layers x samples inferences; 64 ranks layers as well as 256 does in practice).
    min_cosine: embeddings only: a build also needs this mean cosine similarity to the fp32 embeddings of
    the same inputs (None: recall@10 alone decides), e.g. 0.99 for a text encoder.
    qat_epochs: when no post-training build passes and training data is given, fine-tune this many
    epochs with simulated INT8 (0: never).
    synthetic: calibrate on synthetic inputs when no data is given. bench_seconds/bench_repeats: the
    speed measurement's length. per_channel/reduce_range: weights (reduce_range None: on when the CPU
    lacks VNNI).

    Raises:
        ConfigError: any value out of range (at construction).
    """

    engine: str = "onnxruntime"
    method: str = "minmax"
    samples: int = 128
    max_drop: str = "1.0"
    speedup_min: float = 1.1
    time_budget_s: float = 600.0
    batch: int = 8
    threads: int | None = None
    task: str = "classification"
    try_methods: bool = True
    fallback: bool = True
    max_float_layers: int | None = None
    sensitivity_samples: int = 64
    synthetic: bool = False
    bench_seconds: float = 1.0
    speed_check: bool = True
    bench_repeats: int = 3
    per_channel: bool = True
    reduce_range: bool | None = None
    qat_epochs: int = 3
    seed: int = 0
    min_cosine: float | None = None

    def __post_init__(self) -> None:
        from ..engines import canonical

        object.__setattr__(self, "engine", canonical(self.engine))
        if self.engine not in ENGINES:
            raise ConfigError(f"quantize engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        object.__setattr__(self, "max_drop", str(parse_max_drop(self.max_drop)))
        for name in ("samples", "batch", "bench_repeats", "sensitivity_samples"):
            if isinstance(getattr(self, name), bool) or int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        for name in ("speedup_min", "time_budget_s", "bench_seconds"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)}")
        if isinstance(self.qat_epochs, bool) or int(self.qat_epochs) < 0:
            raise ConfigError(f"qat_epochs must be non-negative (0: no QAT), got {self.qat_epochs}")
        if self.min_cosine is not None and not -1.0 <= float(self.min_cosine) <= 1.0:
            raise ConfigError(f"min_cosine must be between -1 and 1 (or None), got {self.min_cosine}")
        if self.max_float_layers is not None and self.max_float_layers < 0:
            raise ConfigError(f"max_float_layers must be non-negative, got {self.max_float_layers}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizeConfig:
        """Build from :meth:`to_dict` output. Raises ConfigError on unknown keys."""
        from ..train.config import config_from_dict

        return config_from_dict(cls, d, "quantize")


@dataclass
class QuantizeResult:
    """The outcome. ``accepted`` only if accuracy and speed both pass; then ``model_path`` is the QDQ file."""

    accepted: bool
    reason: str
    config: QuantizeConfig
    metric: str
    fp32_score: float
    int8_score: float | None = None
    drop: float | None = None
    allowed_drop: float = 0.0
    method: str | None = None
    kept_float: list[str] = field(default_factory=list)
    sensitivity: list[LayerSensitivity] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # calibration methods not built, and why
    speedup: float | None = None
    throughput: dict[str, float] = field(default_factory=dict)
    throughput_spread: dict[str, dict[str, float]] = field(default_factory=dict)  # min, max, n of the repeats
    best_float: str | None = None
    not_int8: list[str] = field(default_factory=list)
    executed_precision: dict[str, int] = field(default_factory=dict)
    candidate_path: Path | None = None  # the best accurate build, even when rejected for speed
    seconds: float = 0.0

    @property
    def model_path(self) -> Path | None:
        return self.candidate_path if self.accepted else None

    def save(self, path: str | Path) -> Path:
        """Copy the accepted model to ``path`` atomically.

        Raises:
            ConfigError: the model was rejected (a rejected model is never written as the result).
        """
        from .._files import atomic_file

        if not self.accepted or self.candidate_path is None:
            raise ConfigError(f"the INT8 model was rejected, nothing written: {self.reason}")
        final = Path(path)
        with atomic_file(final) as tmp:
            shutil.copyfile(self.candidate_path, tmp)
        return final

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("accepted", "reason", "metric", "fp32_score", "int8_score", "drop",
                                           "allowed_drop", "method", "kept_float", "attempts", "skipped", "speedup",
                                           "throughput", "throughput_spread", "best_float", "not_int8", "executed_precision", "seconds")}
        d["config"] = self.config.to_dict()
        d["sensitivity"] = [r.to_dict() for r in self.sensitivity]
        d["model_path"] = str(self.model_path) if self.model_path else None
        return d

    def table(self) -> str:
        """A plain-text summary for the terminal."""
        def f(v: Any, spec: str = ".2f") -> str:
            return "-" if v is None else format(v, spec)

        lines = [f"quantize {self.config.engine}: {'ACCEPTED' if self.accepted else 'REJECTED'} — {self.reason}",
                 (f"  {self.metric}: fp32 {f(self.fp32_score)}  int8 {f(self.int8_score)}  drop {f(self.drop)} "
                  f"(allowed {f(self.allowed_drop)})"),
                 f"  method {self.method or '-'}; kept in float: {', '.join(self.kept_float) or 'none'}",
                 f"  speed-up {f(self.speedup)}x vs {self.best_float or '-'}; "
                 + ", ".join(f"{k} {v:.1f}/s" for k, v in self.throughput.items()),
                 f"  took {self.seconds:.1f} s"]
        if self.sensitivity:
            lines.append("  layer sensitivity (SNR of the output with only that layer int8, dB):")
            lines += [f"    {r.snr_db:8.2f}  {r.layer}" for r in self.sensitivity]
        return "\n".join(lines)


def _data(model: LoadedModel, config: QuantizeConfig, data: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if data is None:
        if not config.synthetic:
            raise InputError("no calibration data: pass data=(x, labels or None), or set synthetic=True")
        n = max(config.samples, 64)
        return model.input.example(n, seed=config.seed + 7), None
    x, y = data if isinstance(data, tuple) else (data, None)
    if x is None or len(x) == 0:
        raise InputError("no calibration data: the data holds no samples")
    x = model.input.validate(np.ascontiguousarray(x, dtype=np.float32) if np.asarray(x).dtype.kind == "f" else x)
    return x, None if y is None else np.asarray(y)


class _Scorer:
    """Scores outputs on the metric the config and data call for, against the fp32 reference."""

    def __init__(self, config: QuantizeConfig, ref: np.ndarray, y: np.ndarray | None):
        self.ref, self.y, self.task = ref, y, config.task
        if config.task == "classification":
            if ref.ndim != 2:
                raise InputError(f"a classifier must output (N, classes), got shape {ref.shape}; use task='embedding'")
            if y is not None:
                self.y = check_labels(y, ref.shape[0], ref.shape[1])
        self.metric = ("top-1 accuracy" if self.y is not None else "top-1 agreement with fp32") \
            if self.task == "classification" else "recall@10 of fp32 neighbours"
        self.baseline = self(ref)

    def __call__(self, out: np.ndarray) -> float:
        return score(out, self.ref, self.y, self.task)


def _load(engine: Any, model: LoadedModel, config: QuantizeConfig, precision: str = "fp32",
          path: Path | None = None) -> Any:
    from ..models import load_model

    m = load_model(str(path), input=model.input) if path is not None else model
    return engine.load(m, SessionOptions(precision, config.threads, config.batch))


def quantize(model: LoadedModel, config: QuantizeConfig | None = None, data: Any = None, *,
             train: tuple[np.ndarray, np.ndarray] | None = None, measure: Measure | None = None) -> QuantizeResult:
    """Quantize ``model`` to INT8 and accept it only if it keeps accuracy and is faster.

    Args:
        model: a loaded float model (torch module or ONNX).
        config: a :class:`QuantizeConfig` (default: ONNX Runtime, min-max, 1 point).
        data: ``(x, y)`` with ``x`` shaped ``(N, *input.shape)`` and ``y`` labels ``(N,)`` or None;
            None with ``config.synthetic`` calibrates on synthetic inputs.
        train: labelled ``(x, y)`` for the QAT fallback (kept apart from ``data``, which scores).
        measure: ``(session, batch) -> samples/s`` (default: the offline scenario for
            ``config.bench_seconds``); tests inject fixed figures here.

    Raises:
        InputError: no data, a shape mismatch, labels outside the model's classes.
        ConfigError, MissingDependencyError, EngineError: from the config and engines.

    Example:
        >>> r = quantize(load_model("effstack.testing:tiny_cnn"), QuantizeConfig(), (x, y))  # doctest: +SKIP
    """
    from ..engines import get_engine
    from ..hardware import has_int8_dot_product

    config = config or QuantizeConfig()
    t0 = time.perf_counter()
    engine = get_engine(config.engine)
    x, y = _data(model, config, data)
    rng = np.random.default_rng(config.seed)
    calib = x[np.sort(rng.permutation(len(x))[: config.samples])]
    with _load(engine, model, config) as fp32:
        ref = run_batches(fp32, x)
    score = _Scorer(config, ref, y)
    tol = parse_max_drop(config.max_drop)
    allowed = tol.allowed(score.baseline)
    res = QuantizeResult(False, "", config, score.metric, score.baseline, allowed_drop=allowed)
    reduce = (not has_int8_dot_product()) if config.reduce_range is None else config.reduce_range
    methods = [config.method] + ([m for m in METHODS if m != config.method] if config.try_methods else [])
    op_types = TRANSFORMER_OPS if is_transformer(model) else None
    cal = Calibration(model, calib, config.per_channel, reduce, methods=tuple(methods), op_types=op_types)

    def attempt(method: str, exclude: tuple[str, ...], source: Calibration | None = None) -> bool:
        path = (source or cal).build(method, exclude)
        with _load(engine, model, config, path=path) as s:
            out = run_batches(s, x)
        got = score(out)
        cos = cosine_similarity(out, ref) if config.task == "embedding" else None
        row = {"method": method if source is None else f"qat+{method}", "kept_float": list(exclude),
               "score": round(got, 3), "drop": round(score.baseline - got, 3), "snr_db": round(snr_db(out, ref), 2),
               "seconds": round(time.perf_counter() - t0, 2)}
        if cos is not None:
            row["cosine"] = round(cos, 5)
        res.attempts.append(row)
        ok = score.baseline - got <= allowed + 1e-9 and (config.min_cosine is None or cos is None
                                                           or cos >= config.min_cosine)
        if ok or res.int8_score is None or got > res.int8_score:
            res.int8_score, res.drop, res.method, res.kept_float = got, row["drop"], row["method"], list(exclude)
            res.candidate_path = path
        return ok

    passed, seen = False, {}
    for method in methods:
        if passed or (res.attempts and time.perf_counter() - t0 > config.time_budget_s):
            break
        ranges = tuple(sorted(cal.bounds(method).items()))
        if ranges in seen:  # e.g. entropy at ONNX Runtime's default bins gives exactly the min-max ranges
            res.skipped[method] = f"same ranges as {seen[ranges]}"
            continue
        seen[ranges] = method
        passed = attempt(method, ())
    if not passed and config.fallback:
        best = res.method or config.method
        xs = x[: config.sensitivity_samples]
        deadline = t0 + config.time_budget_s
        now = time.perf_counter()  # the sensitivity pass gets half the time left, the fallback builds the rest
        res.sensitivity = layer_sensitivity(cal, best, xs, run_onnx(cal.float_path, xs, config.threads),
                                            config.threads, deadline=now + max(deadline - now, 0) / 2)
        limit = len(cal.layers) - 1 if config.max_float_layers is None else config.max_float_layers
        order = tuple(r.layer for r in res.sensitivity)
        passed = _fewest_float_layers(lambda k: attempt(best, order[:k]), min(limit, len(order)), deadline)
    if not passed and config.qat_epochs and train is not None and time.perf_counter() - t0 <= config.time_budget_s:
        from .qat import qat_finetune

        if ref.ndim == 2:  # labels outside the model's classes: a one-line error, not a torch crash
            check_labels(train[1], len(train[0]), ref.shape[1])
        tuned = qat_finetune(model, train[0], train[1], config.qat_epochs, reduce_range=reduce, seed=config.seed)
        qat_cal = Calibration(tuned, calib, config.per_channel, reduce, methods=(config.method,), op_types=op_types)
        passed = attempt(config.method, (), qat_cal)
    if not passed:
        floor = f" and mean cosine >= {config.min_cosine:g}" if config.min_cosine is not None \
            and config.task == "embedding" else ""
        res.reason = (f"no INT8 build kept {score.metric} within {allowed:.2f} points of fp32 "
                      f"({score.baseline:.2f}){floor}; best drop {res.drop:.2f} with {res.method}")
        res.seconds = time.perf_counter() - t0
        return res
    if config.speed_check:
        _speed_check(res, engine, model, config, x, measure)
    else:
        res.accepted = True
        res.reason = f"{score.metric} drop {res.drop:.2f} <= {res.allowed_drop:.2f} with {res.method}; speed not checked"

    res.seconds = time.perf_counter() - t0
    return res


def _fewest_float_layers(passes: Callable[[int], bool], most: int, deadline: float) -> bool:
    """Find the smallest k (most sensitive layers kept float) for which ``passes(k)``, within ``deadline``.

    k = 1, 2, 4, 8, ... until a build passes, then bisection between the last failure and that pass (the
    drop shrinks roughly monotonically as more layers stay float). The passing build tried last is the
    one kept (a passing build always replaces the kept candidate, a failing one never replaces a passing
    one), so the fewest float layers found, hence the fastest passing build, is the result.
    Costs about 2 log2(k) builds instead of k. Returns False when nothing passed in time.
    """
    lo, hi, k = 0, None, 1  # lo: largest k known to fail; hi: smallest k known to pass
    while hi is None and lo < most:
        if time.perf_counter() > deadline:
            return False
        k = min(k, most)
        if passes(k):
            hi = k
        else:
            lo, k = k, k * 2
    if hi is None:
        return False
    while hi - lo > 1 and time.perf_counter() <= deadline:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return True


def _speed_check(res: QuantizeResult, engine: Any, model: LoadedModel, config: QuantizeConfig,
                 x: np.ndarray, measure: Measure | None) -> None:
    measure = measure or offline_measure(config.bench_seconds, config.bench_repeats)
    batch = np.ascontiguousarray(np.resize(x, (config.batch, *x.shape[1:])))
    floats: dict[str, float] = {}
    def timed(name: str, session: Any) -> float:
        rate = float(measure(session, batch))
        spread = getattr(measure, "last", None)  # offline_measure keeps the repeats' spread
        if spread is not None:
            res.throughput_spread[name] = {"min": round(spread.min, 3), "max": round(spread.max, 3), "n": spread.n}
        return rate

    for precision in float_configs(engine):
        try:
            with _load(engine, model, config, precision) as s:
                floats[precision] = timed(precision, s)
        except EffstackError:  # a float precision this machine cannot run is no competitor
            continue
    with _load(engine, model, config, path=res.candidate_path) as s:
        res.throughput["int8"] = timed("int8", s)
        res.executed_precision = s.executed_precision()
        res.not_int8 = float_layers(s)
    res.throughput.update(floats)
    verdict = speed_verdict(res.throughput["int8"], floats, config.speedup_min, res.not_int8)
    res.speedup, res.best_float = round(verdict.speedup, 3), verdict.best_float
    res.accepted = verdict.passed or config.speedup_min == 0
    kept = f", {len(res.kept_float)} layer(s) kept float" if res.kept_float else ""
    res.reason = (f"{res.metric} drop {res.drop:.2f} <= {res.allowed_drop:.2f} with {res.method}{kept}; "
                  + verdict.reason)
