"""Models being served: a :class:`ModelRunner` per model (sessions, warm-up, batcher) and the repository.

A runner loads the model, builds its instances and measures their batch-time curve
(:mod:`effstack.serve.instances`: every batch size run on each before the first request, the p99 curve the
latency-budget mode needs), and feeds the instances through a :class:`~effstack.serve.workers.Batcher`.

A text model (its loaded model or its serving config carries tokenizer information,
:func:`~effstack.serve.text.text_info`) takes ``BYTES`` texts: the runner tokenises each request
(:class:`~effstack.serve.text.TextFrontEnd`), queues its token ids with its length for the length-grouping
batcher, and the batcher pads each batch to its longest text (:func:`~effstack.serve.workers.pad_collate`).
Its warm-up runs every batch size at a short width and times the curve at ``max_length`` (the worst case, so
a latency budget holds for the longest texts too).

The repository maps names to runners. Loading builds the new runner before it replaces the old one, and
unloading stops admission, lets everything queued and computing finish, then closes the sessions: no
admitted request is dropped.

>>> repo = ModelRepository({"m": ServingConfig("effstack.testing:tiny_mlp", engine="null")})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, UnknownModelError, suggest
from .config import AUTO, ServingConfig
from .errors import ModelNotReady
from .instances import Curve, load_instances, pick_layout, warm_up
from .protocol import TensorMeta, datatype_of
from .text import OFF_LOOP_CHARS, TEXT_INPUT, TEXT_OUTPUT, TextFrontEnd, resolve_buckets, text_info, warm_widths
from .workers import Batcher, lower_priority, pad_collate, thread_ids

__all__ = ["ModelRepository", "ModelRunner", "ModelState", "resolve_target"]

log = logging.getLogger("effstack.serve")

VERSION = "1"
MODEL_SUFFIXES = (".onnx", ".ts", ".torchscript", ".jit", ".pt", ".pth")


class ModelRunner:
    """One model being served: its sessions, metadata and batcher.

    Build with :meth:`build` (blocking: loads, warms up, measures; run it off the event loop), then
    :meth:`start` on the loop.
    """

    def __init__(self, name: str, config: ServingConfig, model: Any, sessions: Sequence[Any],
                 curve_s: dict[int, float], output: TensorMeta, owners: Sequence[Any] | None = None,
                 text: TextFrontEnd | None | str = "derive", measured: Curve | None = None):
        self.name = name
        self.version = VERSION
        self.config = config
        self.model = model
        self.sessions = list(sessions)
        self.owners = list(owners) if owners is not None else []  # sessions that the instances share
        self.curve_s = curve_s  # p99 seconds per batch size: what the policy budgets with
        self.measured = measured  # the warm-up's medians and spread (None for runners built on given curves)
        self.text = _front_end(model, config) if text == "derive" else text
        spec = model.input
        if isinstance(self.text, TextFrontEnd):
            self.policy = config.policy(curve_s, resolve_buckets(config.length_buckets, self.text.max_length))
            self.inputs = [TensorMeta(TEXT_INPUT, "BYTES", [-1])]
            self.outputs = [TensorMeta(TEXT_OUTPUT, output.datatype, output.shape)]
        else:
            self.policy = config.policy(curve_s)
            dtype = "float32" if spec.dtype == "bfloat16" else spec.dtype
            self.inputs = [TensorMeta(spec.name, datatype_of(dtype), [-1, *spec.shape])]
            self.outputs = [output]
        self.observer: Any = None
        self.batcher: Batcher | None = None
        self.layouts: dict[int, float] = {}  # instances="auto": samples/s predicted for each layout tried

    @classmethod
    def build(cls, config: ServingConfig, name: str | None = None, sessions: Sequence[Any] | None = None,
              model: Any = None) -> ModelRunner:
        """Load the model, build the sessions (unless given), warm every batch size up and measure the curve.

        Raises:
            ConfigError: no model in the config.
            UnknownModelError, ArtifactError, MissingDependencyError, PrecisionError, EngineError: from
                loading the model or building a session.
        """
        from ..engines import auto_engine, get_engine
        from ..models import load_model

        if model is None:
            if config.model is None:
                raise ConfigError("the serving config names no model; give a model spec or a serving.json")
            model = load_model(config.model)
        if config.instances == AUTO:
            if sessions is None:
                return cls._build_best(config, name, model)
            config = replace(config, instances=len(sessions))  # given sessions are the layout
        text = _front_end(model, config)
        width = None
        if text is not None:
            width = warm_widths(resolve_buckets(config.length_buckets, text.max_length), text.max_length)
        owners: list[Any] = []
        before = thread_ids()
        loaded = sessions is None
        if sessions is None:
            engine = get_engine(auto_engine(config.engine))
            sessions, owners = load_instances(engine, model, config)
        try:
            measured, output = warm_up(sessions, model.input, config.max_batch, warm_width=width)
        except BaseException:
            for s in [*sessions, *owners]:
                s.close()
            raise
        if loaded:  # the engines' own worker threads, started by the load and the first runs
            lower_priority(thread_ids() - before)
        log.info("%s: warmed up batch 1..%d on %d instance(s); p99 curve %s", name or model.name, config.max_batch,
                 len(sessions), {b: f"{s * 1e3:.2f} ms" for b, s in measured.p99_s.items()})
        return cls(name or config.name or model.name, config, model, sessions, measured.p99_s, output, owners,
                   text=text, measured=measured)

    @classmethod
    def _build_best(cls, config: ServingConfig, name: str | None, model: Any) -> ModelRunner:
        """``instances="auto"``: build each layout, predict the rate each sustains, keep one and close the others.

        Among the layouts within :data:`~effstack.serve.instances.AUTO_MARGIN` of the best prediction, the one
        with the smallest batch cap wins, then the one with the fewest instances: a layout that reaches the rate
        without waiting for company depends least on the curve's shape, which five timed runs per batch size
        measure only roughly (here one 2-thread instance and two 1-thread streams were predicted within 0.2% of
        each other; the one instance, batch cap 3, then held its 350 ms p99 up to 13.6/s, where the two streams
        typically hold 21-23/s).

        Each layout is simulated on its warm-up's *median* batch times spread by their measured sigma (at least
        :data:`~effstack.serve.instances.MIN_SIGMA`), as ``benchmarks/serving.py`` validates the simulation, not
        on the p99 curve the policy budgets with: the p99 of five runs is about their maximum, one stray slow run
        moved a layout's prediction by a fifth (ResNet-50 INT8 on Zen 4, one 2-thread instance: 52.5/s predicted
        on one warm-up, 63.6/s on the next; LoadGen then held 70/s with it, 63/s with two 1-thread instances).
        """
        runners: list[ModelRunner] = []
        rates: dict[int, float] = {}
        try:
            for n in config.instance_layouts():
                runner = cls.build(replace(config, instances=n), name, model=model)
                runners.append(runner)
                rates[n] = runner.sustainable_rate()
                log.info("%s: %d instance(s) of %d thread(s): batch cap %d, %.1f samples/s predicted", runner.name,
                         n, runner.config.threads_per_instance(), runner.policy.batch_cap, rates[n])
        except BaseException:
            for r in runners:
                r.close()
            raise
        n_best = pick_layout(rates, {len(r.sessions): r.policy.batch_cap for r in runners})
        best = next(r for r in runners if len(r.sessions) == n_best)
        for r in runners:
            if r is not best:
                r.close()
        best.layouts = rates
        log.info("%s: serving with %d instance(s)", best.name, len(best.sessions))
        return best

    def sustainable_rate(self) -> float:
        """Samples/s this layout is predicted to sustain: with a latency budget, the highest Poisson rate whose
        simulated p99 (the batcher's own rules on the measured curve: its medians spread by their sigma where
        the warm-up measured them, else the p99 curve) meets it; without one, the curve's best throughput over
        all instances."""
        from .simulate import sustainable_rate

        if self.measured is None:
            return sustainable_rate(self.policy, self.curve_s, len(self.sessions))
        return sustainable_rate(self.policy, self.measured.median_s, len(self.sessions),
                                jitter=self.measured.jitter())

    def close(self) -> None:
        """Close the sessions (a runner that never started, or after :meth:`stop` drained it)."""
        for s in [*self.sessions, *self.owners]:
            s.close()

    def start(self, observer: Any = None) -> None:
        """Create the batcher on the running event loop."""
        self.observer = observer
        collate = pad_collate(self.text.pad_id) if self.text is not None else None
        self.batcher = Batcher(self.policy, [s.run for s in self.sessions], observer,
                               inline_below_s=self.config.inline_below_ms / 1e3, collate=collate)

    async def infer(self, x: np.ndarray, timeout_s: float | None = None, priority: int | None = None,
                    trace: Any = None) -> np.ndarray:
        """Batch ``x`` with other requests and return its output rows (see :meth:`Batcher.submit`; ``trace``
        collects the request's stage stamps)."""
        assert self.batcher is not None, "start() the runner first"
        if timeout_s is None and self.config.timeout_ms is not None:
            timeout_s = self.config.timeout_ms / 1e3
        if self.text is None:
            return await self.batcher.submit(x, timeout_s, priority, trace)
        # a text request: tokenise (a large one off the loop), then queue its ids with its length
        enc = (await asyncio.to_thread(self.text.encode, x) if self.text.chars(x) > OFF_LOOP_CHARS
               else self.text.encode(x))
        if trace is not None:  # tokenising counts as parsing in the request's stages
            trace.parse = trace.launch = time.perf_counter_ns()
        if enc.truncated and hasattr(self.observer, "on_truncated"):
            self.observer.on_truncated(enc.truncated)
        return await self.batcher.submit(enc.ids, timeout_s, priority, trace, length=enc.length, tokens=enc.tokens)

    async def stop(self) -> None:
        """Refuse new requests, let queued and running ones finish, then close the sessions."""
        if self.batcher is not None:
            await self.batcher.drain()
            self.batcher.close()
        self.close()

    def metadata(self) -> dict[str, Any]:
        engine = self.sessions[0].engine if self.sessions else "unknown"
        return {"name": self.name, "versions": [self.version], "platform": f"effstack_{engine}",
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    def model_config(self) -> dict[str, Any]:
        """A Triton-style configuration (what tritonclient's ``get_model_config`` and its tools read)."""
        return {
            "name": self.name, "platform": self.metadata()["platform"], "max_batch_size": self.config.max_batch,
            "input": [{"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": t.shape[1:]} for t in self.inputs],
            "output": [{"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": t.shape[1:]} for t in self.outputs],
            "instance_group": [{"count": len(self.sessions), "kind": "KIND_CPU"}],
            "dynamic_batching": {
                "max_queue_delay_microseconds": int((self.config.max_queue_delay_ms or 0) * 1e3),
                "max_queue_size": self.policy.admission_limit, "priority_levels": self.config.priority_levels,
            },
            "parameters": {"effstack": {"string_value": _json({
                "serving": self.config.to_dict(), "batch_cap": self.policy.batch_cap,
                "latency_curve_ms": {str(b): round(s * 1e3, 4) for b, s in self.curve_s.items()},
                **({} if self.measured is None else {
                    "median_curve_ms": {str(b): round(s * 1e3, 4) for b, s in self.measured.median_s.items()},
                    "sigma_log": {str(b): round(v, 4) for b, v in self.measured.sigma.items()}}),
                "sessions": [s.settings() for s in self.sessions],
                "text": None if self.text is None else {
                    "max_length": self.text.max_length, "pad_id": self.text.pad_id,
                    "length_buckets": list(self.policy.length_buckets), "truncation": "silent, at max_length"},
                "layouts_tried": {str(n): round(r, 3) for n, r in self.layouts.items()}})}},
        }

    def state(self, ready: bool = False) -> ModelState:
        b = self.batcher
        if b is None:
            return ModelState(ready=ready)
        return ModelState(b.queue.samples, b.in_flight, b.queue.limit, b.queue.pace, ready)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


class ModelState(NamedTuple):
    """A model's batcher at scrape time."""

    queued: int = 0  # samples waiting
    in_flight: int = 0  # batches being computed
    limit: int = 0  # the admission limit in samples
    pace: float = 1.0  # observed batch time / the curve's p99 (moving average)
    ready: bool = False


def _front_end(model: Any, config: ServingConfig) -> TextFrontEnd | None:
    """The tokenizer front end of a text model (None for other models); the model's ``meta["text"]`` is filled
    from the config when its file did not carry it (a bundle's ONNX file)."""
    info = text_info(model, config.text)
    if info is None:
        return None
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict):
        meta.setdefault("text", info)
    return TextFrontEnd.from_info(info)


@dataclass
class _Entry:
    config: ServingConfig
    runner: ModelRunner | None = None
    state: str = "UNAVAILABLE"  # UNAVAILABLE | LOADING | READY | UNLOADING
    reason: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelRepository:
    """Named models, their configs and runners.

    Args:
        configs: name -> :class:`ServingConfig` (what :func:`resolve_target` returns).
        observer: ``observer(name, version)`` -> the batcher's observer for that model (metrics).
        runners: pre-built runners to serve as they are (tests, embedding): name -> :class:`ModelRunner`.
    """

    def __init__(self, configs: dict[str, ServingConfig], observer: Any = None,
                 runners: dict[str, ModelRunner] | None = None):
        self._entries = {name: _Entry(cfg) for name, cfg in configs.items()}
        for name, runner in (runners or {}).items():
            self._entries[name] = _Entry(runner.config, runner=runner, state="READY")
        self.observer = observer

    def names(self) -> list[str]:
        return sorted(self._entries)

    def ready(self) -> bool:
        return bool(self._entries) and all(e.state == "READY" for e in self._entries.values())

    def _entry(self, name: str) -> _Entry:
        if name not in self._entries:
            raise UnknownModelError(f"unknown model {name!r}; this server has {', '.join(self.names()) or 'none'}."
                                    + suggest(name, self._entries))
        return self._entries[name]

    def get(self, name: str, version: str | None = None) -> ModelRunner:
        """The runner of a ready model.

        Raises:
            UnknownModelError: no such model or version, or the model is not loaded (404).
            ModelNotReady: it is loading (503).
        """
        e = self._entry(name)
        if version not in (None, "", VERSION):
            raise UnknownModelError(f"model {name!r} has no version {version!r}; it has version {VERSION}")
        if e.runner is not None and e.state in ("READY", "LOADING"):  # a reload keeps serving the old runner
            return e.runner
        if e.state == "LOADING":
            raise ModelNotReady(f"model {name!r} is loading; retry shortly")
        raise UnknownModelError(f"model {name!r} is not loaded; POST /v2/repository/models/{name}/load to load it")

    def is_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.get(name, version)
            return True
        except (UnknownModelError, ModelNotReady):
            if name not in self._entries:
                raise
            return False

    def index(self) -> list[dict[str, Any]]:
        return [{"name": n, "version": VERSION, "state": e.state, "reason": e.reason}
                for n, e in sorted(self._entries.items())]

    def state(self) -> dict[tuple[str, str], ModelState]:
        return {(n, VERSION): e.runner.state(e.state == "READY") if e.runner else ModelState()
                for n, e in self._entries.items()}

    async def load(self, name: str, overrides: dict[str, Any] | None = None) -> None:
        """Load (or reload) ``name``: the new runner is built off the loop and replaces the old one only when
        ready; the old one then drains. Settings in ``overrides`` apply to this and later loads.

        Raises:
            UnknownModelError: not in the repository. ConfigError: bad overrides. Anything loading raises.
        """
        e = self._entry(name)
        async with e.lock:
            config = e.config.merged(overrides) if overrides else e.config
            e.state, e.reason = "LOADING", ""
            try:
                runner = await asyncio.to_thread(ModelRunner.build, config, name)
            except BaseException as exc:
                e.state = "READY" if e.runner is not None else "UNAVAILABLE"
                e.reason = f"load failed: {exc}"
                raise
            runner.start(self.observer(name, VERSION) if self.observer else None)
            old, e.runner, e.config, e.state = e.runner, runner, config, "READY"
            if old is not None:
                await old.stop()

    async def unload(self, name: str) -> None:
        """Stop taking requests for ``name``, finish those admitted, close its sessions.

        Raises:
            UnknownModelError: not in the repository.
        """
        e = self._entry(name)
        async with e.lock:
            runner, e.runner = e.runner, None
            e.state = "UNLOADING"
            if runner is not None:
                await runner.stop()
            e.state, e.reason = "UNAVAILABLE", "unloaded"

    async def start(self) -> None:
        """Start pre-built runners and load every configured model (models load one after another)."""
        for name, e in self._entries.items():
            if e.runner is not None and e.runner.batcher is None:
                e.runner.start(self.observer(name, VERSION) if self.observer else None)
        for name, e in self._entries.items():
            if e.runner is None:
                await self.load(name)

    async def close(self) -> None:
        for name in self.names():
            if self._entries[name].runner is not None:
                await self.unload(name)


def resolve_target(target: str, overrides: dict[str, Any], name: str | None = None) -> dict[str, ServingConfig]:
    """What ``effstack serve TARGET`` serves: name -> config.

    TARGET is a bundle folder (``manifest.json`` + ``serving.json``, verified), a folder (a repository: each ``NAME/serving.json`` and each model file ``NAME.onnx``,
    ``NAME.pt``, ... in it is a model), a ``serving.json`` file, or a model spec. ``overrides`` are the
    flags the user gave (flag > file > default). Model names come from folders and file stems; a model
    spec's name is decided at load (its model name) unless ``name`` is given.

    Raises:
        ConfigError: an empty repository folder. ArtifactError: an unreadable serving.json.
    """
    path = Path(target).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file():  # one bundle (effstack ladder --bundle)
        from ..ladder.bundle import read_bundle

        _, cfg = read_bundle(path)
        cfg = cfg.merged(overrides)
        cfg = replace(cfg, name=name or cfg.name or path.name)
        return {cfg.name: cfg}  # type: ignore[dict-item]
    if path.is_dir():
        configs: dict[str, ServingConfig] = {}
        for child in sorted(path.iterdir()):
            if child.is_dir() and (child / "serving.json").is_file():
                cfg = ServingConfig.read(child / "serving.json").merged(overrides)
                configs[cfg.name or child.name] = replace(cfg, name=cfg.name or child.name)
            elif child.is_file() and child.suffix in MODEL_SUFFIXES:
                configs[child.stem] = ServingConfig(model=str(child), name=child.stem).merged(overrides)
        if not configs:
            raise ConfigError(f"{str(path)!r} holds no models: expected NAME/serving.json folders or model files "
                              f"({', '.join(MODEL_SUFFIXES)})")
        return configs
    if path.suffix == ".json" and path.is_file():
        cfg = ServingConfig.read(path).merged(overrides)
    else:
        cfg = ServingConfig(model=target).merged(overrides)
    cfg = replace(cfg, name=name or cfg.name or _default_name(cfg))
    return {cfg.name: cfg}  # type: ignore[dict-item]


def _default_name(cfg: ServingConfig) -> str:
    """The model's protocol name before loading: a torchvision name, a file stem, or a factory's attribute."""
    import re

    source = cfg.model.source if cfg.model is not None else "model"  # type: ignore[union-attr]
    stem = Path(source).stem if ("/" in source or "." in Path(source).name and ":" not in source) else source
    stem = stem.rpartition(":")[2] or stem
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem)[:128] or "model"
