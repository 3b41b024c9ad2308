"""The ladder for an embedding model: every rung scored as recall@10 of the fp32 baseline's neighbours."""

from __future__ import annotations

import json

import pytest

from effstack.cli.main import main
from effstack.errors import ConfigError
from effstack.ladder import Candidate, Variant
from effstack.ladder.workbench import Workbench
from effstack.models.spec import InputSpec

pytest.importorskip("onnxruntime")


def tiny_embedder():
    """A small MLP ending in a Linear (16 numbers in, a 12-dimensional embedding out); no classes, no labels."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 12))
    model.input_spec = InputSpec(shape=(16,), layout="")
    return model.eval()


SPEC = "tests.ladder.test_embedding_ladder:tiny_embedder"


def test_workbench_scores_embeddings_as_recall_of_the_baseline_neighbours():
    from effstack.models import load_model

    model = load_model(SPEC)
    x = model.input.example(64, seed=3)
    bench = Workbench(x, task="embedding", seconds=0.02, repeats=1)
    try:
        base = bench.measure(Variant("fp32", model), Candidate("onnxruntime", "fp32", 4, 1, 1))
        assert base.error is None and base.accuracy == 100.0
        # a model with other weights: its neighbours differ, the recall falls below 100
        import torch

        from effstack.models import from_module

        module = tiny_embedder()
        with torch.no_grad():
            module[2].weight.copy_(torch.randn_like(module[2].weight))
        other = from_module(module, model.input, "other")
        m = bench.measure(Variant("other", other), Candidate("onnxruntime", "fp32", 4, 1, 1))
        assert m.error is None and 0 <= m.accuracy < 100
    finally:
        bench.close()
    with pytest.raises(ConfigError, match="task must be one of"):
        Workbench(x, task="ranking")


def test_cli_ladder_task_embedding_scores_every_rung_as_recall(tmp_path, capsys):
    out = tmp_path / "l.json"
    assert main(["ladder", SPEC, "--task", "embedding", "--engines", "onnxruntime", "--precisions", "",
                 "--latency-budget", "500ms", "--seconds", "0.03", "--max-batch", "4", "--no-prune", "--quiet",
                 "--json", str(out)]) == 0
    assert "recall@10 of the fp32 baseline's neighbours" in capsys.readouterr().out
    rungs = json.loads(out.read_text())["rungs"]
    assert rungs[0]["step"] == "baseline" and rungs[0]["measured"]["accuracy"] == 100.0
    int8 = next(r for r in rungs if r["step"] == "int8")
    assert "a classifier must output" not in int8["reason"]  # the guard was asked for the embedding metric
    assert int8["status"] != "skipped" or "recall@10" in int8["reason"]
    scored = [r["measured"]["accuracy"] for r in rungs if r.get("measured") and r["measured"].get("accuracy")]
    assert len(scored) >= 2 and all(0 <= a <= 100 for a in scored)
    if int8["status"] in ("kept", "rejected") and int8.get("measured"):
        assert int8["measured"]["accuracy"] <= 100.0
