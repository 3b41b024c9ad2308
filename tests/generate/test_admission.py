"""The pure admission rule and the step-cost fit (no model)."""

from __future__ import annotations

import pytest

from effstack.errors import ConfigError
from effstack.generate.admission import Budget, Load, StepCost, StepCostModel, decide, explain, fit_step_cost

COST = StepCost(a=0.010, b=0.002, c=0.0001)  # 10 ms + 2 ms/request + 0.1 ms/prefill token
BUDGET = Budget(ttft_ms=200, tpot_ms=50)


def test_fit_recovers_a_linear_step_cost():
    samples = [(n, e, 0.010 + 0.002 * n + 0.0001 * e) for n in (1, 2, 4, 8, 16) for e in (0, 30, 100)]
    c = fit_step_cost(samples, StepCost(0, 0, 0))
    assert c.a == pytest.approx(0.010, rel=1e-6)
    assert c.b == pytest.approx(0.002, rel=1e-6)
    assert c.c == pytest.approx(0.0001, rel=1e-6)
    assert c.samples == len(samples)


def test_fit_keeps_the_prior_slope_for_a_feature_it_never_saw_vary():
    c = fit_step_cost([(1, 0, 0.012), (1, 0, 0.014)], StepCost(0.0, 0.003, 0.0002))
    assert c.b == 0.003 and c.c == 0.0002
    assert c.step_s(1) == pytest.approx(0.013)  # intercept absorbs the rest


def test_fit_never_goes_negative():
    c = fit_step_cost([(1, 0, 0.05), (8, 0, 0.01), (16, 0, 0.011)], StepCost(0, 0, 0))
    assert c.a >= 0 and c.b >= 0 and c.c >= 0


def test_model_window_and_bad_samples():
    m = StepCostModel(window=3)
    m.add(0, 0, 1.0)
    m.add(2, 2, -1.0)
    assert len(m) == 0 and m.cost().samples == 0
    for n in (1, 2, 3, 4):
        m.add(n, n, 0.001 * n)
    assert len(m) == 3


def test_admits_on_light_load():
    d = decide(Load(running=3), 20, BUDGET, COST)
    assert d.admit and d.reason == "ok" and d.retry_after_s == 0
    assert d.tpot_ms == pytest.approx(10 + 2 * 4)


def test_refuses_what_would_break_tpot():
    d = decide(Load(running=25, remaining_tokens=(7, 3, 9)), 20, BUDGET, COST)  # 10 + 2*26 = 62 ms > 50
    assert not d.admit and d.reason == "tpot_budget"
    assert d.retry_after_s == pytest.approx(3 * COST.step_s(25))  # the soonest running request frees a slot
    assert "TPOT" in explain(d, BUDGET)


def test_refuses_what_would_miss_ttft_behind_pending_prefills():
    d = decide(Load(running=2, pending_prefill=1500), 20, BUDGET, COST, max_batch_tokens=256)
    assert not d.admit and d.reason == "ttft_budget" and d.ttft_ms > 200
    assert "TTFT" in explain(d, BUDGET)


def test_ttft_counts_chunked_prefill_steps():
    one = decide(Load(0), 200, None, COST, max_batch_tokens=256).ttft_ms
    two = decide(Load(0), 300, None, COST, max_batch_tokens=256).ttft_ms  # two chunks: one more base step
    assert two == pytest.approx(2 * (10 + 2) + 0.1 * 300)
    assert one == pytest.approx(10 + 2 + 0.1 * 200)


def test_a_prompt_that_cannot_meet_ttft_even_alone_is_the_clients():
    d = decide(Load(running=0), 5000, BUDGET, COST)
    assert not d.admit and d.reason == "prompt_too_long" and d.retry_after_s == 0
    assert "shorten" in explain(d, BUDGET)


def test_the_first_request_is_admitted_even_if_decoding_alone_breaks_tpot():
    # a lone request cannot be helped by refusing it; the TPOT rule protects requests already running
    d = decide(Load(running=0), 10, Budget(ttft_ms=200, tpot_ms=1), COST)
    assert d.admit


def test_batch_full_without_a_budget():
    assert decide(Load(running=63), 10, None, COST, max_running=64).admit
    d = decide(Load(running=64, remaining_tokens=(5,)), 10, None, COST, max_running=64)
    assert not d.admit and d.reason == "batch_full" and d.retry_after_s > 0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "10"])
def test_budget_must_be_positive_ms(bad):
    with pytest.raises(ConfigError, match="milliseconds"):
        Budget(ttft_ms=bad, tpot_ms=10)


def test_budget_met():
    b = Budget(ttft_ms=100, tpot_ms=10)
    assert b.met(0.09, 0.009) and b.met(0.1, None)
    assert not b.met(None, None) and not b.met(0.2, 0.001) and not b.met(0.05, 0.02)
