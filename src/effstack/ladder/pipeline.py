"""``run_ladder``: a model, data and a budget in; a measured ladder out (and, with ``bundle``, a folder to serve).

This is where the ladder meets the real pieces: models are loaded, evaluated and exported by effstack's
loaders and engines, INT8 comes from :func:`effstack.compress.quantize` (with its accuracy fallbacks but
without its own speed check: the ladder measures speed itself, side by side with every other rung),
pruning and distillation from :mod:`effstack.compress`, the layout from :mod:`effstack.plan`.

>>> result = run_ladder("resnet18", budget=Budget(200.0), seconds=0.5)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, EffstackError, InputError, one_line
from .core import Budget, Candidate, Rung
from .runner import Ladder, LadderResult, Shrunk, Variant
from .workbench import Workbench

__all__ = ["LadderData", "run_ladder", "make_quantizer", "make_pruner", "make_distiller", "make_layout"]


@dataclass
class LadderData:
    """The data a ladder needs: ``eval`` scores every rung; ``train`` (optional) fine-tunes pruned models and
    teaches students. Both are ``(x, y)`` with ``y`` None for unlabelled data (then accuracy is agreement with
    the baseline, and students learn from the teacher's outputs alone). ``unlabelled`` (optional) are more
    inputs, typically from the deployment domain, that only distillation uses: with them the student learns
    from the teacher's outputs alone on ``train``'s inputs plus these (never the evaluation inputs)."""

    eval: tuple[np.ndarray, np.ndarray | None]
    train: tuple[np.ndarray, np.ndarray | None] | None = None
    unlabelled: np.ndarray | None = None

    def __post_init__(self) -> None:
        x, y = self.eval
        if not isinstance(x, np.ndarray) or x.ndim < 2 or len(x) == 0:
            raise InputError("the evaluation data must be a non-empty numpy batch (N, ...); pass --data")
        if y is not None and len(y) != len(x):
            raise InputError(f"evaluation labels must match the inputs: {len(y)} labels for {len(x)} inputs")
        u = self.unlabelled
        if u is not None and (not isinstance(u, np.ndarray) or u.shape[1:] != x.shape[1:]):
            shape = getattr(u, "shape", type(u).__name__)
            raise InputError(f"unlabelled inputs must be a numpy batch shaped like the evaluation data "
                             f"(N, {', '.join(map(str, x.shape[1:]))}), got {shape}")


def _variant(model: Any, label: str, **kw: Any) -> Variant:
    return Variant(label, model, params=getattr(model, "params", None), macs=getattr(model, "macs", None), **kw)


def make_quantizer(data: LadderData, *, samples: int = 128, time_budget_s: float = 300.0, qat_epochs: int = 0,
                   task: str = "classification", min_cosine: float | None = None) -> Callable[[Variant, Candidate, float], Shrunk]:
    """The INT8 hook: :func:`effstack.compress.quantize` for the config's engine, within the points left
    (``task="embedding"``: the guard scores recall@10 of the fp32 neighbours, as the ladder does, and
    ``min_cosine`` also asks that much mean cosine agreement with the fp32 embeddings)."""

    def quantizer(variant: Variant, config: Candidate, drop_left: float) -> Shrunk:
        from ..compress import QuantizeConfig, quantize
        from ..models import load_model

        if getattr(variant.model, "module", None) is None:
            return Shrunk(None, "INT8 needs the float torch model; this one came as an ONNX file")
        x, y = data.eval
        train = data.train if qat_epochs and data.train is not None and data.train[1] is not None else None
        # calibration streams the float pass in chunks and keeps only statistics, so any count fits in memory
        qc = QuantizeConfig(engine=config.engine, max_drop=f"{drop_left:.4f}", samples=min(samples, len(x)),
                            batch=config.batch, threads=config.threads, speed_check=False, qat_epochs=qat_epochs,
                            time_budget_s=time_budget_s, task=task, min_cosine=min_cosine)
        try:
            res = quantize(variant.model, qc, (x, y), train=train)
        except EffstackError as exc:
            return Shrunk(None, one_line(exc))
        details = {"method": res.method, "kept_float": res.kept_float, "drop_vs_float": res.drop,
                   "attempts": res.attempts, "seconds": round(res.seconds, 1)}
        if res.candidate_path is None:
            return Shrunk(None, res.reason, details)
        # a build that missed the guard's tolerance is still handed back (the most accurate one tried): the
        # ladder measures it and rejects it by its own accuracy rule, so the table shows what INT8 would
        # have bought and what it cost
        details["guard"] = "passed" if res.accepted else res.reason
        model = load_model(str(res.candidate_path), input=variant.model.input)
        q = _variant(model, f"{variant.label}-int8", int8=True, engines=(config.engine,), float_parent=variant)
        q.params, q.macs = variant.params, variant.macs
        q.details["artifact"] = str(res.candidate_path)
        return Shrunk(q, res.reason, details)

    return quantizer


def make_pruner(data: LadderData, *, flops_ratio: float = 0.5, epochs: int = 3, steps: int = 3,
                fine_tune: bool = False) -> Callable[[Variant], Shrunk]:
    """The pruning hook: structural channel pruning to ``flops_ratio`` of the MACs, each round fine-tuned by
    distillation from the unpruned model on the training inputs (plus ``data.unlabelled``): no labels
    needed, and the copy learns to give the original's outputs, which is what the ladder scores.
    ``fine_tune`` (a model with trained weights): :data:`FINE_TUNE`'s gentler step and fixed BatchNorm
    statistics."""

    def pruner(variant: Variant) -> Shrunk:
        if data.train is None:
            return Shrunk(None, "pruning needs training inputs to fine-tune on (labels optional); pass --train-data")
        try:
            from ..compress import PruneConfig, prune
            from ..models import from_module
            from ..train import TrainConfig
        except ImportError as exc:  # the shrink extra or module is missing
            return Shrunk(None, f"pruning is not available here: {exc}")
        m = variant.model
        try:
            x = m.input.example(1)
            inputs = data.train if data.unlabelled is None else \
                (np.concatenate([data.train[0], data.unlabelled]), None)
            res = prune(m.module, x, PruneConfig(target_flops_ratio=flops_ratio, round_to=8, steps=steps,
                                                 finetune=TrainConfig(epochs=epochs, progress=False,
                                                                      **(_fine_tune_train(epochs) if fine_tune else {}))),
                        inputs, teacher=m.module)
            small = from_module(res.model, m.input, f"{variant.label}-pruned")
        except EffstackError as exc:
            return Shrunk(None, one_line(exc))
        return Shrunk(_variant(small, small.name), "pruned",
                      {"macs_before": res.macs_before, "macs_after": res.macs_after,
                       "params_before": res.params_before, "params_after": res.params_after})

    return pruner


# How a model that already has trained weights (a pretrained student, or a pruned copy of a pretrained
# model) learns from the teacher: EfficientNet-Lite0 at 192 px under Lite2 on the photos' 528 train-split
# edits (Xeon AVX-512, 2026-12-03) agreed on 81% after 3 epochs with the from-scratch recipe (T 4, lr 2e-3,
# BatchNorm statistics re-estimated from batches of 64) and on 95-97% after 1-3 epochs with this one. The
# hard term is the teacher's top-1, what the ladder scores.
FINE_TUNE = {"lr": 3e-4, "temperature": 1.0, "hard": 1.0, "batch_size": 32}


def _fine_tune_train(epochs: int) -> dict[str, Any]:
    return {"lr": FINE_TUNE["lr"], "batch_size": FINE_TUNE["batch_size"], "freeze_norm": True,
            "warmup_epochs": 0.1 * epochs}


def make_distiller(data: LadderData, student: Any, *, epochs: int = 10, temperature: float = 4.0,
                   alpha: float = 0.9, student_size: int | None = None, lr: float = 2e-3, batch_size: int = 64,
                   fine_tune: bool | None = None) -> Callable[[Variant], Shrunk]:
    """The distillation hook: ``student`` (a LoadedModel or a spec) learns from the teacher on the training
    inputs (their labels are used when present, the teacher's outputs always).

    A student with its own input (a pretrained EfficientNet-Lite0 at 224 under a Lite2 teacher at 260) keeps
    it: the student variant takes the teacher's inputs and resizes them inside the model to its own side,
    or to ``student_size`` (:func:`effstack.models.adapt.adapt_input`), so it is scored on the same
    evaluation set and deployed behind the same preprocessing. ``fine_tune`` (None: when the student comes
    with trained weights, a pretrained model by name) trains it with :data:`FINE_TUNE` instead of
    ``temperature``, ``lr`` and ``batch_size``, and fixed BatchNorm statistics."""

    def distiller(variant: Variant) -> Shrunk:
        if student is None:
            return Shrunk(None, "no student model given; pass --student")
        if data.train is None:
            return Shrunk(None, "distillation needs training inputs (labels optional); pass --train-data")
        inputs = data.train if data.unlabelled is None else np.concatenate([data.train[0], data.unlabelled])
        try:
            out, info = distill_student(variant.model, student, inputs, epochs=epochs, student_size=student_size,
                                        fine_tune=fine_tune, temperature=temperature, alpha=alpha, lr=lr,
                                        batch_size=batch_size)
        except EffstackError as exc:
            return Shrunk(None, one_line(exc))
        return Shrunk(_variant(out, "student"), "distilled", info)

    return distiller


def adapted_student(student: Any, teacher_in: Any, student_size: int | None = None) -> tuple[Any, Any]:
    """``(the student as a LoadedModel, its module taking the teacher's InputSpec)``: an image student keeps its
    own side (or runs at ``student_size``) behind a resize and renormalisation inside the model."""
    from ..models import load_model
    from ..models.adapt import adapt_input

    s = student if hasattr(student, "module") else load_model(student)
    own = s.input if len(s.input.shape) == 3 else teacher_in
    size = (student_size, student_size) if student_size else None
    return s, adapt_input(s.module, own, teacher_in, size) if len(teacher_in.shape) == 3 else s.module


def distill_student(teacher: Any, student: Any, inputs: Any, *, epochs: int = 10, student_size: int | None = None,
                    fine_tune: bool | None = None, temperature: float = 4.0, alpha: float = 0.9, lr: float = 2e-3,
                    batch_size: int = 64, name: str = "student") -> tuple[Any, dict[str, Any]]:
    """``student`` (a LoadedModel or a spec) trained on ``teacher``'s (a LoadedModel) outputs over ``inputs``
    (an array in the teacher's input, or ``(x, y)`` whose labels are used too): ``(the student as a
    LoadedModel taking the teacher's input, what was done as a dict)``. :func:`make_distiller` and
    ``effstack cascade --distill-epochs`` share it.

    A student with its own input keeps it behind an adapter that resizes to its side (or ``student_size``) and
    renormalises; ``fine_tune`` (None: when the student comes with trained weights) trains with
    :data:`FINE_TUNE` and fixed BatchNorm statistics instead of ``temperature``, ``lr`` and ``batch_size``.

    Raises:
        EffstackError: the student cannot be loaded, adapted or trained (a one-line reason).
    """
    from ..compress import DistillConfig, distill
    from ..models import from_module
    from ..train import TrainConfig

    teacher_in = teacher.input
    s, module = adapted_student(student, teacher_in, student_size)
    tuned = _has_trained_weights(student) if fine_tune is None else fine_tune
    # plain batches: on the demo's digits, shifted batches and a larger step cost the student 2 points
    config = TrainConfig(epochs=epochs, progress=False, **(_fine_tune_train(epochs) if tuned else
                                                           {"batch_size": batch_size, "lr": lr}))
    loss = {"temperature": FINE_TUNE["temperature"], "hard": FINE_TUNE["hard"]} if tuned else \
        {"temperature": temperature}
    r = distill(teacher.module, module, inputs, DistillConfig(alpha=alpha, train=config, **loss))
    out = from_module(module, teacher_in, name)
    runs_at = tuple(getattr(module, "size", teacher_in.shape[1:]))
    return out, {
        "student": getattr(s, "name", str(student)), "epochs": epochs, "recipe": "fine-tune" if tuned else "scratch",
        **loss, "lr": config.lr, "alpha": alpha, "student_macs": out.macs, "runs_at": list(runs_at),
        "train_inputs": int(len(inputs[0] if isinstance(inputs, tuple) else inputs)),
        "seconds": round(getattr(r, "seconds", 0.0), 1)}


def _has_trained_weights(model: Any) -> bool:
    """Whether ``model`` (a spec or LoadedModel) comes with trained weights: a pretrained name, a weights file."""
    from ..models.loader import is_pretrained

    spec = getattr(model, "spec", None)
    source = spec.source if spec is not None else str(model)
    return is_pretrained(source) or bool(getattr(spec, "weights", None)) or \
        source.endswith((".pt", ".pth", ".ts", ".onnx"))


def make_layout(budget: Budget, *, cores: int | None = None, max_batch: int = 256, seconds: float = 1.0,
                mode: str = "smart") -> Callable[..., list[Candidate]]:
    """The layout hook: the planner (:func:`effstack.plan.plan`) over instances x threads x batch for the
    current engine and precision, measuring through the ladder (so what it measures is cached and reported)."""
    from ..engines.base import available_cores

    total = cores or available_cores()

    def layout(variant: Variant, current: Candidate, measure: Callable[[Variant, Candidate], Any]) -> list[Candidate]:
        from ..plan import Grid, Measurement, plan

        layouts = [(n, total // n) for n in range(1, total + 1) if total % n == 0]
        batches = sorted({2 ** k for k in range(max_batch.bit_length()) if 2 ** k <= max_batch} | {current.batch})
        grid = Grid.build(current.engine, current.precision, batches, instances=sorted({n for n, _ in layouts}),
                          threads=sorted({t for _, t in layouts}), cores=total, supported=lambda e: (current.precision,))

        def measured(c: Candidate, secs: float) -> Measurement:
            m = measure(variant, c)
            if m.error:
                return Measurement.failed(m.error, secs)
            return Measurement(throughput=m.throughput, p50_ms=m.p50_ms, p99_ms=m.p99_ms, seconds=secs)

        result = plan(grid, measured, budget.p99_ms, objective="latency" if budget.objective == "latency" else
                      "throughput", mode=mode, seconds=seconds, progress=False)
        return [result.best[0]] if result.best else []

    return layout


def _missing_engines(names: list[str]) -> dict[str, str]:
    from ..engines import ENGINES

    out = {}
    for name in names:
        if not ENGINES.is_available(name):
            out[name] = f"not installed (pip install 'effstack[{'onnx' if name == 'onnxruntime' else name}]')"
    return out


def run_ladder(model: Any, *, budget: Budget, data: LadderData | None = None, student: Any = None,
               engines: tuple[str, ...] = ("onnxruntime", "openvino"), precisions: tuple[str, ...] = ("bf16", "fp16"),
               seconds: float = 1.0, max_batch: int = 256, time_budget_s: float | None = None,
               prune: bool = True, recalibrate_bn: bool | None = None, eval_samples: int = 256,
               distill_epochs: int = 10, prune_epochs: int = 3, layout: bool = True,
               student_size: int | None = None, prune_ratio: float = 0.5,
               progress: bool = True, measure: Callable[[Variant, Candidate], Any] | None = None,
               task: str = "classification", distiller: Callable[[Variant], Shrunk] | None = None,
               min_cosine: float | None = None) -> LadderResult:
    """Climb the ladder for ``model`` (a spec string or LoadedModel) under ``budget``.

    Without ``data`` the rungs are scored on synthetic image-like inputs (:meth:`InputSpec.image_like`: white
    noise would leave a classifier's top-1 hinging on tiny logit gaps) as top-1 agreement with the fp32 baseline
    (and a torchvision model without weights gets its BatchNorm statistics recalibrated first, so its
    outputs are not degenerate). Pruning and distillation need ``data.train``. ``task="embedding"`` (a
    model whose output is an embedding): every rung is scored as recall@10 of the fp32 baseline's
    neighbours on the evaluation inputs, in points (100: identical), and the INT8 guard scores the same way.

    A text encoder (``meta["text"]``, e.g. ``all-minilm-l6-v2``) is always scored as an embedding model, on
    token ids (without ``data``: the built-in corpus, :func:`effstack.text.data.ladder_data`, padded to 128
    tokens, so speed is measured at batch x 128); it is never pruned, and its student (``student``: the
    number of layers, default half the teacher's) is distilled by :func:`effstack.text.distill.make_text_distiller`.
    ``distiller`` replaces the distillation hook; ``min_cosine`` (embeddings) is the INT8 guard's floor on
    the mean cosine agreement with fp32.

    Raises:
        ConfigError: the baseline cannot run, or bad settings. InputError: data that does not fit the model.
    """
    from ..hardware import library_versions, machine_info
    from ..models import load_model, recalibrate_batchnorm

    loaded = model if hasattr(model, "input") else load_model(model)
    text = "text" in getattr(loaded, "meta", {})
    if text:  # token ids in, an embedding out: scored by its neighbours, taught by a student with fewer layers
        from ..text.data import ladder_data
        from ..text.distill import make_text_distiller

        task, prune, recalibrate_bn = "embedding", False, False
        if data is None:
            data = ladder_data(loaded, eval_count=eval_samples)[0]
        if distiller is None:
            if student is not None and not str(student).isdigit():
                raise ConfigError(f"a text model's student is its number of layers (e.g. 3), got {student!r}")
            layers = int(student) if student is not None else None
            # no bar of its own: the ladder's spinner is already live on the console
            distiller = make_text_distiller(data, layers=layers, epochs=distill_epochs)
    if data is None:
        x = loaded.input.image_like(eval_samples, seed=11)
        data = LadderData((x, None))
    x_eval, y_eval = data.eval
    loaded.input.validate(np.ascontiguousarray(x_eval[:1]))
    if recalibrate_bn is None:  # only a model with random weights: trained ones keep their statistics
        from ..models.loader import is_pretrained

        recalibrate_bn = loaded.module is not None and not loaded.spec.weights and ":" not in loaded.spec.source \
            and not is_pretrained(loaded.spec.source) \
            and "/" not in loaded.spec.source and not loaded.spec.source.endswith((".pt", ".pth", ".ts", ".onnx"))
    if recalibrate_bn and loaded.module is not None:
        calib = loaded.input.image_like(64, seed=12)
        if recalibrate_batchnorm(loaded.module, [calib[i:i + 16] for i in range(0, 64, 16)]):
            from ..models import from_module

            loaded = from_module(loaded.module, loaded.input, loaded.name, loaded.spec.source)
    bench = Workbench(x_eval, y_eval, task=task, seconds=seconds,
                      calibration=data.train[0] if data.train is not None else None)
    missing = _missing_engines(list(engines))
    if text:
        missing["prune"] = "structural channel pruning is for convolutional models; a text encoder shrinks by distillation"
    if data.train is None:
        missing.setdefault("prune", "pruning needs training inputs to fine-tune on (labels optional); pass --train-data")
    ladder = Ladder(
        _variant(loaded, loaded.name), budget, measure or bench.measure, engines=engines, precisions=precisions,
        int8_engines=tuple(e for e in ("onnxruntime", "openvino") if e in engines),
        quantizer=make_quantizer(data, task=task, min_cosine=min_cosine),
        pruner=make_pruner(data, flops_ratio=prune_ratio, epochs=prune_epochs, fine_tune=not recalibrate_bn
                           and _has_trained_weights(loaded)) if prune and data.train else None,
        distiller=distiller or (make_distiller(data, student, epochs=distill_epochs, student_size=student_size)
                                if student is not None else None),
        layout=make_layout(budget, max_batch=max_batch, seconds=seconds) if layout else None,
        max_batch=max_batch, time_budget_s=time_budget_s,
        missing={**missing, "distill": "no student model given; pass --student"}
        if student is None and distiller is None else missing,
        model_name=loaded.name)
    with _progress(progress) as on_rung:
        ladder.on_rung = on_rung
        try:
            result = ladder.climb()
        finally:
            bench.close()
    result.machine, result.versions = machine_info(), library_versions()
    return result


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[Rung], None] | None]:
    """A spinner while a rung is measured and one line per decided rung (on stderr)."""
    if not enabled:
        yield None
        return
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("[bold]ladder[/] measuring the baseline ...", spinner="dots") as status:
        def on_rung(rung: Rung) -> None:
            mark = {"kept": "[green]kept[/]", "rejected": "[red]rejected[/]"}.get(rung.status, "[dim]skipped[/]")
            m = rung.measured
            figs = f" {m.throughput:,.0f}/s, p99 {m.p99_ms:.2f} ms" if m and m.throughput else ""
            console.print(f"  {rung.step:<12} {mark}{figs} — {rung.reason}", highlight=False)
            status.update(f"[bold]ladder[/] after {rung.step} ...")

        yield on_rung
