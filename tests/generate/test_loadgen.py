"""Continuous vs static vs one-at-a-time on the tiny model: every mode serves every request; the summary adds up."""

from __future__ import annotations

import pytest

from effstack.errors import ConfigError
from effstack.generate.admission import Budget
from effstack.generate.loadgen import make_jobs, run_load

from .conftest import greedy_alone

TEXTS = ["the quick brown fox", "a cat and a dog", "one two three four five", "red green blue"]


def test_jobs_are_seeded_and_ordered(tiny_lm):
    prompts = [tiny_lm.encode(t) for t in TEXTS]
    a, b = make_jobs(prompts, 20, 50.0, seed=3), make_jobs(prompts, 20, 50.0, seed=3)
    assert a == b and all(x.at < y.at for x, y in zip(a, a[1:]))
    assert all(16 <= j.max_tokens <= 48 for j in a)
    with pytest.raises(ConfigError):
        make_jobs(prompts, 5, 0.0)


@pytest.mark.parametrize("mode", ["continuous", "static", "sequential"])
def test_every_mode_serves_every_request(tiny_lm, engine_factory, mode):
    prompts = [tiny_lm.encode(t) for t in TEXTS]
    jobs = make_jobs(prompts, 12, 200.0, seed=1, tokens=(3, 8))
    engine = engine_factory(max_running=16)  # room for every request: no batch_full refusals
    out = run_load(engine, jobs, mode, Budget(ttft_ms=60_000, tpot_ms=60_000), batch=4, deadline_s=60)
    s = out["summary"]
    assert s["finished"] == s["met_both"] == s["requests"] == 12 and s["refused"] == s["unfinished"] == 0
    assert s["batch"] == (1 if mode == "sequential" else 4) and s["goodput_rps"] > 0
    assert [r["tokens"] for r in out["requests"]] == [j.max_tokens for j in jobs]
    assert engine.load().running == 0


def test_budget_misses_and_refusals_count_against_goodput(tiny_lm, engine_factory):
    prompts = [tiny_lm.encode(t) for t in TEXTS]
    jobs = make_jobs(prompts, 6, 500.0, seed=2, tokens=(30, 40))
    engine = engine_factory(Budget(ttft_ms=1e6, tpot_ms=1e-6))
    s = run_load(engine, jobs, "continuous", engine.budget, deadline_s=60)["summary"]
    assert s["refused"] >= 1 and s["met_both"] == 0 and s["goodput_rps"] == 0  # no TPOT can be 1 ns
    seq = run_load(engine, jobs, "sequential", Budget(ttft_ms=1e-6, tpot_ms=1e6), deadline_s=60)["summary"]
    assert seq["finished"] == 6 and seq["met_both"] == 0


def test_outputs_under_load_are_still_greedy(tiny_lm, engine_factory):
    prompts = [tiny_lm.encode(t) for t in TEXTS]
    jobs = make_jobs(prompts, 8, 300.0, seed=4, tokens=(4, 10))
    engine = engine_factory(max_running=16)
    out = run_load(engine, jobs, "continuous", Budget(60_000, 60_000), deadline_s=60, keep_tokens=True)
    assert out["summary"]["finished"] == 8
    assert [r["output_ids"] for r in out["requests"]] == [greedy_alone(tiny_lm, list(j.prompt_ids), j.max_tokens)
                                                          for j in jobs]
    with pytest.raises(ConfigError, match="mode"):
        run_load(engine, jobs, "dynamic", Budget(1, 1))
