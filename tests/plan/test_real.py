"""measure_real on real sessions (tiny models, short measurements) and the ``effstack plan`` command."""

from __future__ import annotations

import json

import pytest

from effstack.cli.main import main
from effstack.errors import PrecisionError, UnknownEngineError
from effstack.plan import Candidate, measure_real

TINY = "effstack.testing:tiny_mlp"


@pytest.fixture(scope="module")
def tiny_mlp():
    from effstack.models import load_model

    return load_model(TINY)


@pytest.mark.parametrize("candidate", [Candidate("null", "fp32", 4), Candidate("torch", "fp32", 2, instances=2)])
def test_measure_real_gives_throughput_and_latency(tiny_mlp, candidate):
    m = measure_real(tiny_mlp, candidate, 0.05, repeats=2)
    assert m.ok and m.throughput > 0 and 0 < m.p50_ms <= m.p99_ms
    assert m.samples % candidate.batch == 0 and m.seconds == 0.05
    assert m.other_cpu_pct is None or m.other_cpu_pct >= 0


def test_measure_real_raises_effstack_errors(tiny_mlp):
    with pytest.raises(UnknownEngineError):
        measure_real(tiny_mlp, Candidate("tensorflow"), 0.05)
    with pytest.raises(PrecisionError):
        measure_real(tiny_mlp, Candidate("torch", "int8"), 0.05)


def test_plan_command_prints_the_choice_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["plan", TINY, "--latency-budget", "1s", "--engines", "null,torch", "--precisions", "fp32,int8",
                 "--batches", "1,2", "--instances", "1", "--threads", "1", "--exhaustive", "--seconds", "0.05",
                 "--price-per-hour", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "choice: " in text and "Pareto front" in text and "left out: torch int8" in text
    doc = json.loads(out.read_text())
    assert doc["plan"]["n_cells"] == doc["plan"]["n_measured"] == 6  # (null fp32, null int8, torch fp32) x b1, b2
    assert doc["plan"]["best"]["meets_budget"] and doc["plan"]["best"]["cost_per_million"] > 0
    assert doc["model"] == "tiny_mlp" and "machine" in doc


def test_plan_command_infeasible_budget_is_one_line_exit_2(capsys):
    code = main(["plan", TINY, "--latency-budget", "0.0001ms", "--engines", "torch", "--precisions", "fp32",
                 "--batches", "1", "--instances", "1", "--threads", "1", "--seconds", "0.05"])
    err = capsys.readouterr().err.strip().splitlines()  # progress lines, then the error
    assert code == 2 and err[0].startswith("plan [1/1 cells] torch fp32 b1 1x1")
    assert err[-1].startswith("effstack: error: no candidate met the p99 budget of 0.0001 ms; the fastest p99 seen was")


@pytest.mark.parametrize("argv, message", [
    (["--latency-budget", "fast"], "expected a positive latency like 7ms"),
    (["--latency-budget", "7ms", "--engines", "tensorflow"], "unknown engine 'tensorflow'"),
    (["--latency-budget", "7ms", "--objective", "cost", "--engines", "null", "--batches", "1", "--instances", "1",
      "--threads", "1"], "objective 'cost' needs the machine's price"),
])
def test_plan_command_rejects_bad_requests(capsys, argv, message):
    try:
        code = main(["plan", TINY, *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
