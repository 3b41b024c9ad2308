"""The ladder's decisions and arithmetic, driven by an injected cost model (no clock involved)."""

from __future__ import annotations

import math

import pytest

from effstack.errors import ConfigError
from effstack.ladder import Budget, Candidate, Ladder, LadderResult, Measured, Rung, Shrunk, Variant
from effstack.ladder.core import KEPT, REJECTED, SKIPPED, attribute, cost_per_million, decide, infeasible_message

# per-sample cost in ms and per-call overhead in ms, by (variant, engine, precision)
COST = {
    ("teacher", "torch", "fp32"): (4.0, 2.0),
    ("teacher", "onnxruntime", "fp32"): (2.0, 0.2),
    ("teacher", "openvino", "fp32"): (2.5, 0.2),
    ("teacher-int8", "onnxruntime", "int8"): (0.8, 0.2),
    ("teacher-int8", "openvino", "int8"): (0.9, 0.2),
    ("student", "onnxruntime", "fp32"): (0.2, 0.1),
    ("student-int8", "onnxruntime", "int8"): (0.1, 0.1),
    ("student-int8", "openvino", "int8"): (0.12, 0.1),
}
ACCURACY = {"teacher": 95.0, "teacher-int8": 94.6, "student": 94.5, "student-int8": 94.4}


class CostModel:
    def __init__(self, accuracy=None, cost=None):
        self.calls: list[tuple[str, Candidate]] = []
        self.accuracy = {**ACCURACY, **(accuracy or {})}
        self.cost = {**COST, **(cost or {})}

    def __call__(self, variant: Variant, config: Candidate) -> Measured:
        self.calls.append((variant.label, config))
        key = (variant.label, config.engine, config.precision)
        if key not in self.cost:
            return Measured(error=f"{config.engine} cannot run {config.precision} here")
        per, over = self.cost[key]
        latency = over + per * config.batch / config.instances ** 0.5
        return Measured(throughput=1000.0 * config.batch * config.instances / latency, p99_ms=latency * 1.1,
                        accuracy=self.accuracy[variant.label])


def quantizer(variant, config, left):
    if config.engine not in ("onnxruntime", "openvino"):
        return Shrunk(None, "not an int8 engine")
    return Shrunk(Variant(variant.label + "-int8", int8=True, engines=("onnxruntime", "openvino"),
                          float_parent=variant), "ok", {"left": left})


def distiller(variant):
    return Shrunk(Variant("student", params=1000), "distilled", {"epochs": 3})


def climb(budget_ms=20.0, max_drop="1.0", **kw) -> tuple[LadderResult, CostModel]:
    cost = kw.pop("cost", CostModel())
    hooks = dict(quantizer=quantizer, distiller=distiller)
    hooks.update(kw)
    ladder = Ladder(Variant("teacher", params=10_000), Budget(budget_ms, max_drop), cost, max_batch=64, cores=2,
                    **hooks)
    return ladder.climb(), cost


def by_step(result: LadderResult) -> dict[str, Rung]:
    return {r.step: r for r in result.rungs}


def test_every_rung_is_reported_in_order_with_its_status():
    result, _ = climb()
    steps = [r.step for r in result.rungs]
    assert steps == ["baseline", "batching", "engine", "precision", "int8", "prune", "distill", "distill_int8",
                     "layout"]
    rungs = by_step(result)
    assert rungs["baseline"].status == KEPT
    assert rungs["batching"].status == KEPT and rungs["batching"].config.batch > 1
    assert rungs["engine"].status == KEPT and rungs["engine"].config.engine == "onnxruntime"
    assert rungs["precision"].status == SKIPPED and "bf16" in rungs["precision"].reason
    assert rungs["int8"].status == KEPT and rungs["int8"].config.precision == "int8"
    assert rungs["prune"].status == SKIPPED and "prune" in rungs["prune"].reason
    assert rungs["distill_int8"].status == KEPT and rungs["distill_int8"].variant == "student-int8"
    assert result.final.step == "distill_int8"
    assert result.infeasible is None


def test_batch_search_stops_at_the_budget():
    result, _ = climb(budget_ms=20.0)
    batching = by_step(result)["batching"]
    # torch teacher: latency 2 + 4b ms (p99 x1.1): b=4 -> 19.8 ms fits, b=8 -> 37.4 ms does not
    assert batching.config.batch == 4
    curve = result.curves["teacher · torch fp32"]
    assert [p["batch"] for p in curve] == [1, 2, 4, 8]
    assert batching.measured.p99_ms <= 20.0


def test_attribution_multiplies_to_the_total():
    result, _ = climb()
    kept = [r for r in result.rungs if r.status == KEPT]
    product = math.prod(r.step_speedup for r in kept)
    assert product == pytest.approx(result.speedup(), rel=1e-9)
    assert kept[0].cumulative_speedup == 1.0
    assert result.speedup() == pytest.approx(kept[-1].measured.throughput / kept[0].measured.throughput)


def test_accuracy_drop_rejects_a_rung_and_keeps_the_previous_best():
    result, _ = climb(cost=CostModel(accuracy={"teacher-int8": 93.0}))
    rungs = by_step(result)
    assert rungs["int8"].status == REJECTED
    assert "accuracy drop 2.00 points > 1.00 allowed" in rungs["int8"].reason
    # the next rung is compared with the fp32 engine rung, which stayed the current best
    assert rungs["distill"].status == KEPT


def test_drops_are_measured_against_the_baseline_not_the_previous_rung():
    # each step loses 0.6 points: fine one at a time, but student-int8 is 1.2 below the baseline
    acc = {"teacher-int8": 94.4, "student": 94.4, "student-int8": 93.8}
    result, _ = climb(cost=CostModel(accuracy=acc))
    assert by_step(result)["distill_int8"].status == REJECTED
    assert result.final.variant in ("student", "teacher-int8")


def test_a_slower_rung_is_rejected_with_its_ratio():
    cost = CostModel(cost={("teacher", "onnxruntime", "fp32"): (4.0, 2.0), ("teacher", "openvino", "fp32"): (4.1, 2.0)})
    result, _ = climb(cost=cost)
    engine = by_step(result)["engine"]
    assert engine.status == REJECTED and "only" in engine.reason and "1.05x" in engine.reason
    assert engine.step_speedup is not None and engine.step_speedup < 1.05


def test_a_failing_hook_is_skipped_with_its_reason():
    result, _ = climb(distiller=lambda v: Shrunk(None, "needs training data; pass --data"))
    rungs = by_step(result)
    assert rungs["distill"].status == SKIPPED and "needs training data" in rungs["distill"].reason
    assert rungs["distill_int8"].status == SKIPPED


def test_infeasible_budget_names_the_fastest_p99():
    result, _ = climb(budget_ms=0.1)
    assert result.infeasible is not None
    assert "fastest p99 seen was 0.22 ms" in result.infeasible  # student int8 at batch 1: (0.1 + 0.1) * 1.1
    assert "--latency-budget" in result.infeasible


def test_layout_rung_measures_the_proposed_layouts():
    def layouts(v, c, measure):
        assert measure(v, c).throughput > 0  # the search measures through the ladder (cached)
        return [Candidate(c.engine, c.precision, c.batch, 2, 1), Candidate(c.engine, c.precision, c.batch, 1, 2)]

    result, cost = climb(layout=layouts)
    layout = by_step(result)["layout"]
    assert layout.status == KEPT and layout.config.instances == 2
    assert len(layout.details["tried"]) == 1  # the 1x2 layout is the current one: nothing to try


def test_layout_rung_with_the_planner_searches_batch_and_instances():
    from effstack.ladder.pipeline import make_layout

    result, cost = climb(layout=make_layout(Budget(20.0), cores=2, max_batch=64, seconds=0.01))
    layout = by_step(result)["layout"]
    assert layout.status == KEPT and layout.config.instances == 2 and layout.config.threads == 1
    assert layout.measured.p99_ms <= 20.0
    tried = {c for label, c in cost.calls if c.instances == 2}
    assert len({c.batch for c in tried}) > 1  # the planner moved along the batch axis


def test_measurements_are_cached_per_variant_and_config():
    result, cost = climb()
    assert len(cost.calls) == len(set(cost.calls))


def test_result_round_trips_through_json():
    import json

    result, _ = climb()
    back = LadderResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert [r.to_dict() for r in back.rungs] == [r.to_dict() for r in result.rungs]
    assert back.budget == result.budget
    with pytest.raises(ConfigError, match="not an effstack ladder"):
        LadderResult.from_dict({"kind": "other"})


def test_time_budget_skips_the_remaining_rungs():
    result, _ = climb(time_budget_s=0.0)
    assert all(r.status == SKIPPED and "time budget" in r.reason for r in result.rungs[1:])


def test_baseline_that_cannot_run_is_a_clear_error():
    with pytest.raises(ConfigError, match="baseline .* could not run"):
        Ladder(Variant("nothing"), Budget(5.0), CostModel(), cores=2).climb()


@pytest.mark.parametrize("kw, match", [({"p99_ms": 0}, "latency budget must be positive"),
                                       ({"p99_ms": 5, "min_gain": 0.9}, "min_gain"),
                                       ({"p99_ms": 5, "objective": "speed"}, "objective"),
                                       ({"p99_ms": 5, "max_drop": "lots"}, "max drop")])
def test_budget_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        Budget(**kw)


def test_decide_order_and_messages():
    base = Measured(100.0, 5.0, 90.0)
    b = Budget(7.0, "1%")
    assert decide(Measured(300.0, 8.0, 90.0), base, base, b) == (REJECTED, "p99 8.00 ms over the 7 ms budget")
    assert decide(Measured(300.0, 6.0, 89.0), base, base, b)[0] == REJECTED  # 1 point > 0.9 (1% of 90)
    assert decide(Measured(300.0, 6.0, 89.2), base, base, b)[0] == KEPT
    assert decide(Measured(error="boom"), base, base, b) == (REJECTED, "boom")
    over = Measured(50.0, 50.0, 90.0)  # the current best is over budget: any candidate within it is progress
    assert decide(Measured(40.0, 6.0, 90.0), over, base, b)[0] == KEPT


def test_latency_objective_prefers_lower_p99():
    b = Budget(7.0, objective="latency")
    cur = Measured(100.0, 5.0, 90.0)
    assert decide(Measured(50.0, 3.0, 90.0), cur, cur, b)[0] == KEPT
    assert decide(Measured(500.0, 4.9, 90.0), cur, cur, b)[0] == REJECTED


def test_cost_per_million():
    assert cost_per_million(1000.0, 3.6) == pytest.approx(1.0)
    assert cost_per_million(1000.0, None) is None


def test_attribute_skips_rungs_without_measurements():
    rungs = [Rung("baseline", "b", KEPT, measured=Measured(10.0, 1.0)), Rung("x", "x", SKIPPED),
             Rung("y", "y", KEPT, measured=Measured(30.0, 1.0))]
    attribute(rungs)
    assert rungs[1].step_speedup is None and rungs[2].cumulative_speedup == 3.0


def test_infeasible_message_without_measurements():
    assert "no configuration could be measured" in infeasible_message(Budget(5.0), [Measured(error="x")])


def test_precision_rung_asks_every_engine_not_just_the_current_one():
    # the current engine after the engine rung is onnxruntime (no bf16 path); openvino runs bf16 natively here
    cost = CostModel(cost={("teacher", "openvino", "bf16"): (0.9, 0.2)})
    result, model = climb(cost=cost)
    rungs = by_step(result)
    assert rungs["engine"].config.engine == "onnxruntime"
    prec = rungs["precision"]
    assert prec.status == KEPT and (prec.config.engine, prec.config.precision) == ("openvino", "bf16")
    asked = {(c.engine, c.precision) for _, c in model.calls if c.precision in ("bf16", "fp16")}
    assert asked == {(e, p) for e in ("onnxruntime", "openvino", "torch") for p in ("bf16", "fp16")}
    skipped = [t["reason"] for t in prec.details["tried"] if t["status"] == SKIPPED]
    assert any(r.startswith("onnxruntime bf16:") for r in skipped) and any(r.startswith("torch fp16:") for r in skipped)


def test_int8_rung_measures_the_engines_own_whole_model_int8_side_by_side():
    # the engine quantizing every layer itself runs at 0.5 ms/sample; the guarded build (0.8) keeps float islands
    cost = CostModel(cost={("teacher", "onnxruntime", "int8"): (0.5, 0.2)}, accuracy={})
    result, model = climb(cost=cost)
    int8 = by_step(result)["int8"]
    own = int8.details["engine_int8"]
    build = int8.measured
    assert own["throughput"] > build.throughput and own["ratio"] == pytest.approx(build.throughput / own["throughput"])
    assert ("teacher", Candidate("onnxruntime", "int8", int8.config.batch, 1, 2)) in model.calls  # same batch
    # an engine that has no INT8 of its own: the rung still decides, the side-by-side says why it is missing
    result, _ = climb()
    assert "error" in by_step(result)["int8"].details["engine_int8"]


def test_int8_side_by_side_is_the_median_of_alternating_rounds():
    class Noisy(CostModel):  # every other measurement of any variant runs at half speed (a noisy neighbour)
        def __call__(self, variant, config):
            m = super().__call__(variant, config)
            if m.throughput and len(self.calls) % 2 == 0:
                m.throughput /= 2
            return m

    cost = Noisy(cost={("teacher", "onnxruntime", "int8"): (0.7, 0.2), ("teacher", "openvino", "int8"): (0.8, 0.2)})
    result, _ = climb(cost=cost)
    own = by_step(result)["int8"].details["engine_int8"]
    assert len(own["ratios"]) == 3 and own["ratio"] == pytest.approx(sorted(own["ratios"])[1], abs=1e-3)
    assert len(set(own["ratios"])) > 1  # each round measured afresh, not the cached first one again
    int8_calls = [c for label, c in cost.calls if label == "teacher" and c.precision == "int8"]
    tried = {c.engine for c in int8_calls}
    assert len(int8_calls) == 3 * len(tried)  # the engine's own: one cached round, then two fresh ones
    from effstack.report.ladder import ladder_text

    assert "median of 3 alternating rounds" in ladder_text(result)


def test_int8_build_runs_its_float_layers_at_the_precision_the_ladder_kept_on_that_engine():
    class Recording(CostModel):
        def __call__(self, variant, config):
            self.calls_fp = getattr(self, "calls_fp", []) + [(variant.label, config.engine, variant.float_precision)]
            return super().__call__(variant, config)

    # openvino bf16 wins the precision rung: its INT8 build carries bf16 float layers, the onnxruntime one fp32
    cost = Recording(cost={("teacher", "openvino", "bf16"): (0.9, 0.2)})
    result, _ = climb(cost=cost)
    rungs = by_step(result)
    assert (rungs["precision"].config.engine, rungs["precision"].config.precision) == ("openvino", "bf16")
    builds = {(engine, fp) for label, engine, fp in cost.calls_fp if label == "teacher-int8"}
    assert builds == {("openvino", "bf16"), ("onnxruntime", "fp32")}
    tried = rungs["int8"].details["tried"]
    assert [t["title"] for t in tried if "float layers bf16" in t["title"]] == ["teacher-int8 on openvino (float layers bf16), batch 8"]
    # no reduced precision kept: every INT8 build keeps fp32 float layers
    cost = Recording()
    climb(cost=cost)
    assert {fp for label, _, fp in cost.calls_fp if label == "teacher-int8"} == {"fp32"}


def test_workbench_opens_an_int8_build_at_its_float_precision(monkeypatch):
    import numpy as np

    import effstack.engines as engines
    from effstack.ladder.workbench import Workbench

    asked = []

    class Engine:
        def load(self, model, options):
            asked.append(options.precision)
            return object()

    monkeypatch.setattr(engines, "get_engine", lambda name: Engine())
    bench = Workbench(np.zeros((2, 3), np.float32))
    for fp in ("bf16", "fp32"):
        v = Variant(f"m-int8-{fp}", model=object(), int8=True, float_precision=fp)
        bench._session(v, Candidate("openvino", "int8", 8, 1, 2))
    bench._session(Variant("m", model=object()), Candidate("openvino", "int8", 8, 1, 2))
    assert asked == ["bf16", "fp32", "int8"]  # the last: the engine's own INT8 of the float model


def test_int8_build_falls_back_to_fp32_float_layers_when_bf16_ones_lose_too_much():
    cost = CostModel(cost={("teacher", "openvino", "bf16"): (0.9, 0.2),
                           ("teacher-int8-fp32float", "openvino", "int8"): (0.95, 0.2)},
                     accuracy={"teacher-int8": 93.0, "teacher-int8-fp32float": 94.6})  # bf16 islands: -2 points
    result, model = climb(cost=cost)
    tried = [t["title"] for t in by_step(result)["int8"].details["tried"]]
    assert tried[:2] == ["teacher-int8 on openvino (float layers bf16), batch 8",
                         "teacher-int8-fp32float on openvino (float layers fp32), batch 8"], tried
    assert ("teacher-int8-fp32float", "openvino") in {(label, c.engine) for label, c in model.calls}
