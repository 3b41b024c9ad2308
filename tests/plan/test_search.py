"""The planner against a synthetic cost model with a known optimum (no measuring, no timing)."""

from __future__ import annotations

import json

import pytest

from effstack.errors import ConfigError
from effstack.plan import BudgetInfeasibleError, Candidate, Measurement, PlanResult, pareto_front, plan

from . import synthetic
from .synthetic import Model


@pytest.mark.parametrize("budget_ms", [3.0, 10.0, 40.0])
def test_exhaustive_finds_the_known_optimum(budget_ms):
    grid = synthetic.grid()
    model = Model()
    result = plan(grid, model, budget_ms, mode="exhaustive", progress=False)
    assert result.n_cells == result.n_measured == len(model.calls) == 105
    assert result.best[0] == synthetic.best(grid, budget_ms)


@pytest.mark.parametrize("budget_ms", [3.0, 10.0, 40.0])
def test_smart_finds_the_known_optimum_measuring_a_quarter_of_the_cells(budget_ms):
    grid = synthetic.grid()
    model = Model()
    result = plan(grid, model, budget_ms, progress=False)
    assert result.best[0] == synthetic.best(grid, budget_ms)
    assert result.n_measured <= 0.25 * result.n_cells
    assert result.n_measured == len({c for c, _ in model.calls})
    # successive halving: short measurements first, the finalists re-measured for the full time
    times = sorted({s for _, s in model.calls})
    assert times == [0.25, 0.5, 1.0]
    assert any(c == result.best[0] and s == 1.0 for c, s in model.calls)


def test_smart_states_the_assumptions_and_why_families_were_dropped():
    result = plan(synthetic.grid(), Model(), 10.0, progress=False)
    assert any("assumed: p99 grows with batch" in a for a in result.assumptions)
    dropped = [why for what, why in result.rejected if "screened at b8" in why]
    assert dropped and any(why.startswith("dominated") for why in dropped)
    assert ("slow int8", "engine runs fp32 here") in result.rejected  # from the grid


def test_smart_with_noise_stays_close_to_the_optimum():
    grid = synthetic.grid()
    for seed in range(5):
        result = plan(grid, Model(noise=0.1, seed=seed), 10.0, progress=False)
        exact = synthetic.truth(synthetic.best(grid, 10.0)).throughput
        assert synthetic.truth(result.best[0]).throughput >= 0.85 * exact
        assert result.n_measured <= 0.25 * result.n_cells


def test_latency_objective_picks_the_lowest_p99():
    grid = synthetic.grid()
    for mode in ("exhaustive", "smart"):
        result = plan(grid, Model(), 10.0, objective="latency", mode=mode, progress=False)
        assert result.best[0] == synthetic.best(grid, 10.0, "latency")
    assert result.n_measured == len(grid.families())  # smart: the smallest batch of each family


def test_cost_objective_needs_a_price_and_reports_dollars_per_million():
    with pytest.raises(ConfigError, match="price_per_hour"):
        plan(synthetic.grid(), Model(), 10.0, objective="cost", progress=False)
    result = plan(synthetic.grid(), Model(), 10.0, objective="cost", price_per_hour=3.6, progress=False)
    c, m = result.choice()
    assert c == synthetic.best(synthetic.grid(), 10.0)
    assert result.cost(m) == pytest.approx(1e6 / m.throughput / 1000)
    assert result.to_dict()["best"]["cost_per_million"] == pytest.approx(result.cost(m))


@pytest.mark.parametrize("mode", ["smart", "exhaustive"])
def test_infeasible_budget_names_the_fastest_p99_seen(mode):
    result = plan(synthetic.grid(), Model(), 0.5, mode=mode, progress=False)
    assert result.best is None
    fastest = min(m.p99_ms for _, m in result.measured)
    assert f"the fastest p99 seen was {fastest:.3g} ms" in result.message
    with pytest.raises(BudgetInfeasibleError, match="budget of 0.5 ms") as info:
        result.choice()
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_a_failing_engine_costs_its_cells_not_the_search():
    grid = synthetic.grid()
    result = plan(grid, Model(fail={"mid"}), 10.0, progress=False)
    assert result.best is not None and result.best[0].engine != "mid"
    failed = [m for c, m in result.measured if c.engine == "mid"]
    assert failed and all(not m.ok and "mid fell over" in m.error for m in failed)
    assert any(what.startswith("mid") and "failed" in why for what, why in result.rejected)


def test_every_measurement_failing_says_so():
    result = plan(synthetic.grid(engines=["mid"]), Model(fail={"mid"}), 10.0, progress=False)
    assert result.best is None and result.message.startswith("every measured candidate failed")


def test_measure_must_return_a_measurement():
    result = plan(synthetic.grid(engines=["mid"]), lambda c, s: 42, 10.0, mode="exhaustive", progress=False)
    assert "must return a Measurement" in result.measured[0][1].error


@pytest.mark.parametrize("kwargs, match", [
    ({"objective": "speed"}, "objective must be one of"),
    ({"mode": "lucky"}, "mode must be one of"),
    ({"budget_ms": 0}, "budget must be positive"),
    ({"seconds": 0}, "measurement times must be positive"),
    ({"keep": 0}, "keep must be a fraction"),
    ({"price_per_hour": -1.0}, "price_per_hour must be positive"),
])
def test_bad_options_are_config_errors(kwargs, match):
    kwargs = {"budget_ms": 10.0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        plan(synthetic.grid(), Model(), progress=False, **kwargs)


def _dominated(m: Measurement, by: Measurement) -> bool:
    """``by`` is at least as good as ``m`` on both axes and strictly better on one."""
    return (by.throughput >= m.throughput and by.p99_ms <= m.p99_ms
            and (by.throughput > m.throughput or by.p99_ms < m.p99_ms))


def _brute_front(trials) -> set[tuple[float, float]]:
    """The non-dominated (p99, throughput) points of the successful trials, by comparing every pair."""
    ok = [m for _, m in trials if m.ok]
    return {(m.p99_ms, m.throughput) for m in ok if not any(_dominated(m, o) for o in ok)}


def _check_front(trials, front) -> None:
    """``front`` holds exactly the non-dominated points (each once, equal points collapsed to one), sorted by p99."""
    points = [(m.p99_ms, m.throughput) for _, m in front]
    assert set(points) == _brute_front(trials)
    assert len(points) == len(set(points))  # equal points: one representative, not several
    assert all(any(f is t for t in trials) for f in front)  # the trials themselves, not copies
    assert points == sorted(points)
    assert [t for _, t in points] == sorted(t for _, t in points)


def _m(throughput: float, p99_ms: float) -> Measurement:
    return Measurement(throughput=throughput, p99_ms=p99_ms)


@pytest.mark.parametrize("points, expected", [
    # a dominated point in the middle (slower and later than (2, 20)) is left out
    ([(10, 1), (5, 2), (20, 3), (15, 4), (30, 5)], {(1, 10), (3, 20), (5, 30)}),
    # the input order does not matter; the highest throughput at the highest p99 stays in
    ([(30, 5), (15, 4), (20, 3), (5, 2), (10, 1)], {(1, 10), (3, 20), (5, 30)}),
    # equal p99, different throughput: only the faster one
    ([(10, 2), (12, 2), (8, 1)], {(1, 8), (2, 12)}),
    # equal throughput, different p99: only the lower p99
    ([(10, 3), (10, 1), (20, 4)], {(1, 10), (4, 20)}),
    # equal points: one of them, and one that both beat is out
    ([(10, 1), (10, 1), (5, 1), (10, 2)], {(1, 10)}),
    # every point on the front: a strictly rising staircase
    ([(1, 1), (2, 2), (3, 3), (4, 4)], {(1, 1), (2, 2), (3, 3), (4, 4)}),
    # one point beats all the others
    ([(100, 1), (50, 2), (99, 1.5), (10, 9)], {(1, 100)}),
    # a single point
    ([(7, 7)], {(7, 7)}),
])
def test_pareto_front_is_exactly_the_non_dominated_points(points, expected):
    c = Candidate("e")
    trials = [(Candidate("e", batch=i + 1), _m(t, p)) for i, (t, p) in enumerate(points)]
    trials.append((c, Measurement.failed("boom")))  # failures are never on the front
    front = pareto_front(trials)
    assert _brute_front(trials) == expected  # the brute force agrees with the hand-worked front
    _check_front(trials, front)
    assert {(m.p99_ms, m.throughput) for _, m in front} == expected


def test_pareto_front_of_random_sets_matches_brute_force():
    import random

    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 12)
        # small integer grids make ties and equal points common
        trials = [(Candidate("e", batch=i + 1), _m(rng.randint(0, 6), rng.randint(0, 6))) for i in range(n)]
        if rng.random() < 0.3:
            trials.append((Candidate("x"), Measurement.failed("no")))
        _check_front(trials, pareto_front(trials))


def test_pareto_front_is_non_dominated_and_sorted_by_p99():
    result = plan(synthetic.grid(), Model(), 10.0, mode="exhaustive", progress=False)
    front = result.pareto
    _check_front(result.measured, front)
    on_front = {id(m) for _, m in front}
    dominated = [m for _, m in result.measured if id(m) not in on_front]
    assert front and dominated  # the synthetic grid has both
    for m in dominated:
        assert any(_dominated(m, f) or (f.p99_ms, f.throughput) == (m.p99_ms, m.throughput) for _, f in front)
    failed = (Candidate("x"), Measurement.failed("no"))
    assert pareto_front([failed]) == []
    assert pareto_front([]) == []


def test_result_round_trips_through_json():
    result = plan(synthetic.grid(), Model(), 10.0, price_per_hour=1.0, progress=False)
    back = PlanResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.best == result.best and back.measured == result.measured and back.n_cells == result.n_cells
    assert back.assumptions == result.assumptions and back.rejected == result.rejected


def test_progress_lines_go_to_stderr(capsys):
    plan(synthetic.grid(engines=["mid"], precisions=["fp32"]), Model(), 10.0, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "plan [1/21 cells] mid fp32 b8 1x1 (0.25 s):" in err


def test_a_finalist_over_budget_when_measured_longer_steps_down_within_its_family():
    class Tail(Model):  # longer measurements see a heavier tail: p99 x 1.3
        def __call__(self, c, seconds):
            m = super().__call__(c, seconds)
            k = 1.3 if seconds >= 1.0 else 1.0
            return Measurement(throughput=m.throughput, p50_ms=m.p50_ms, p99_ms=m.p99_ms * k, samples=100,
                               seconds=seconds)

    grid = synthetic.grid()
    model = Tail()
    result = plan(grid, model, 7.0, progress=False)  # mid int8 b32 2x1: p99 6.25 ms short, 8.1 ms long
    c, m = result.choice()
    assert m.seconds == 1.0 and m.meets(7.0)
    assert any("was over the budget when measured for 1 s" in a for a in result.assumptions)
    assert result.n_measured <= 0.25 * result.n_cells
