"""The LM ladder on tiny models: the honesty rules (quality first, then speed), rung records, the table, the CLI."""

from __future__ import annotations

import json
import random

import pytest

from effstack.errors import ConfigError, InputError
from effstack.generate.ladder import LMLadderConfig, decide, format_table, prompt_ids, run_lm_ladder
from effstack.generate.tiny import TINY_WORDS, tiny_llama

_rng = random.Random(0)
TEXTS = [" ".join(_rng.choice(TINY_WORDS[:24]) for _ in range(30)) for _ in range(24)]
CFG = LMLadderConfig(context=16, eval_tokens=200, prompts=2, prompt_tokens=8, new_tokens=6, batch=2)


def test_decide_quality_first_then_speed():
    c = LMLadderConfig(ppl_tolerance=0.05, min_gain=1.1)
    assert decide(10.4, 10.0, 12.0, 10.0, c) == ("kept", "1.20x the current best")
    assert decide(10.6, 10.0, 50.0, 10.0, c)[0] == "rejected"  # faster but worse beyond 5%
    assert decide(10.0, 10.0, 10.5, 10.0, c)[1].startswith("1.05x the current best (needs 1.10x)")
    assert decide(10.0, 10.0, 50.0, 10.0, c, identical=False)[1].startswith("greedy outputs differ")
    assert decide(float("nan"), 10.0, 50.0, 10.0, c)[0] == "rejected"


def test_ladder_on_tiny_models(tiny_lm):
    draft = tiny_llama(seed=5, layers=1, hidden=16)
    seen = []
    r = run_lm_ladder(tiny_lm, TEXTS[:6], TEXTS[6:], draft, CFG, on_rung=seen.append)
    assert [x["rung"] for x in r["rungs"]] == [x["rung"] for x in seen] == ["fp32", "int8-weights", "speculative"]
    base, q, spec = r["rungs"]
    assert base["status"] == "kept" and base["total_speedup"] == 1.0
    assert q["status"] in ("kept", "rejected") and abs(q["ppl_change"]) < 0.05
    if q["status"] == "rejected":
        assert "current best" in q["reason"]  # quality held on a tiny model; only speed can reject it
    assert spec["status"] in ("kept", "rejected") and 0 <= spec["acceptance_rate"] <= 1
    assert spec["target"] == ("int8-weights" if q["status"] == "kept" else "fp32")
    if spec["status"] == "kept":
        assert spec["identical"] == "2/2"
    kept = [x for x in r["rungs"] if x["status"] == "kept"]
    assert r["final"]["kept"] == [x["rung"] for x in kept]
    prod = 1.0
    for x in kept:
        prod *= x["step_speedup"]
    assert prod == pytest.approx(r["final"]["total_speedup"])  # step speed-ups multiply to the total
    table = format_table(r)
    assert "int8-weights" in table and "final:" in table
    json.dumps(r)  # the result is a JSON document


def test_batched_objective_skips_speculative(tiny_lm):
    cfg = LMLadderConfig(**{**CFG.to_dict(), "objective": "batched"})
    r = run_lm_ladder(tiny_lm, TEXTS[:6], TEXTS[6:], tiny_llama(seed=5, layers=1, hidden=16), cfg)
    assert r["rungs"][2]["status"] == "skipped" and "one sequence" in r["rungs"][2]["reason"]
    r = run_lm_ladder(tiny_lm, TEXTS[:6], TEXTS[6:], None, CFG)
    assert r["rungs"][2] == {"rung": "speculative", "status": "skipped", "reason": "no draft model given"}


def test_bad_config_and_prompts(tiny_lm):
    with pytest.raises(ConfigError, match="ppl_tolerance"):
        LMLadderConfig(ppl_tolerance=-0.1)
    with pytest.raises(ConfigError, match="objective"):
        LMLadderConfig(objective="fastest")
    with pytest.raises(ConfigError, match="min_gain"):
        LMLadderConfig(min_gain=0.9)
    with pytest.raises(InputError, match="prompt_tokens"):
        prompt_ids(tiny_lm, ["a cat"], 1, 8)


def test_cli_train_then_ladder(tmp_path, capsys):
    from effstack.cli.main import main

    out = tmp_path / "draft"
    assert main(["generate", "train", "--teacher", "tiny", "--out", str(out), "--layers", "1", "--hidden", "16",
                 "--heads", "2", "--kv-heads", "1", "--intermediate", "32", "--context", "16", "--steps", "3",
                 "--no-progress"]) == 0
    assert "3 steps" in capsys.readouterr().out and (out / "config.json").is_file()
    doc = tmp_path / "ladder.json"
    assert main(["generate", "ladder", "--model", "tiny", "--draft", str(out), "--prompts", "1", "--prompt-tokens",
                 "4", "--new-tokens", "4", "--batch", "2", "--context", "16", "--eval-tokens", "64",
                 "--json", str(doc)]) == 0
    assert "speculative" in capsys.readouterr().out
    assert [r["rung"] for r in json.loads(doc.read_text())["rungs"]] == ["fp32", "int8-weights", "speculative"]
    assert main(["generate", "train", "--teacher", "tiny", "--out", str(out), "--hidden", "30"]) == 2
