"""The ladder for an embedding model: every rung scored as recall@10 of the fp32 baseline's neighbours."""

from __future__ import annotations

import json

import numpy as np
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
K = 10


def _embed(module, x: np.ndarray) -> np.ndarray:
    """The MLP's forward pass written out in numpy (float64) from its state dict: Linear, ReLU, Linear."""
    sd = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    h = np.maximum(x.astype(np.float64) @ sd["0.weight"].T + sd["0.bias"], 0.0)
    return h @ sd["2.weight"].T + sd["2.bias"]


def _recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    """Recall@10 in points, by brute force: for each sample, its 10 nearest others by cosine similarity under
    ``truth`` and under ``found``, and the share of the former among the latter."""
    def neighbours(e: np.ndarray) -> list[set[int]]:
        unit = [v / np.linalg.norm(v) for v in e.astype(np.float64)]
        out = []
        for i, u in enumerate(unit):
            sims = sorted(((float(u @ w), j) for j, w in enumerate(unit) if j != i), key=lambda t: -t[0])
            out.append({j for _, j in sims[:K]})
        return out

    hits = sum(len(a & b) for a, b in zip(neighbours(found), neighbours(truth)))
    return 100.0 * hits / (K * len(found))


def _measure(bench: Workbench, label: str, module, inputs) -> float:
    from effstack.models import from_module

    m = bench.measure(Variant(label, from_module(module, inputs, label)), Candidate("onnxruntime", "fp32", 4, 1, 1))
    assert m.error is None, m.error
    return m.accuracy


def test_workbench_scores_embeddings_as_recall_of_the_baseline_neighbours():
    import torch

    from effstack.models import load_model

    model = load_model(SPEC)
    x = model.input.example(64, seed=3)
    truth = _embed(model.module, x)
    bench = Workbench(x, task="embedding", seconds=0.02, repeats=1)
    try:
        base = bench.measure(Variant("fp32", model), Candidate("onnxruntime", "fp32", 4, 1, 1))
        assert base.error is None and base.accuracy == 100.0
        assert bench.reference is not None and np.allclose(bench.reference, truth, rtol=1e-4, atol=1e-5)

        # a model with other weights: its neighbours differ; the score is the recall computed here
        other = tiny_embedder()
        with torch.no_grad():
            other[2].weight.copy_(torch.randn(other[2].weight.shape, generator=torch.Generator().manual_seed(5)))
        expected = _recall_at_10(_embed(other, x), truth)
        assert 0 < expected < 90  # the brute force sees the difference too
        got = _measure(bench, "other", other, model.input)
        assert got == pytest.approx(expected, abs=0.5)  # one neighbour of 640 is 0.16 points

        # the same directions at 4x the length (exact in floating point): the same cosine neighbours
        scaled = tiny_embedder()
        with torch.no_grad():
            scaled[2].weight.mul_(4.0)
            scaled[2].bias.mul_(4.0)
        assert _recall_at_10(_embed(scaled, x), truth) == 100.0
        assert _measure(bench, "scaled", scaled, model.input) == 100.0

        # a broken embedding that ignores its input (every vector the same) scores about chance (10/63 = 16%)
        broken = tiny_embedder()
        with torch.no_grad():
            broken[0].weight.zero_()
        assert _measure(bench, "broken", broken, model.input) < 40.0
    finally:
        bench.close()
    with pytest.raises(ConfigError, match="task must be one of"):
        Workbench(x, task="ranking")


def test_cli_ladder_task_embedding_scores_every_rung_as_recall(tmp_path, capsys, monkeypatch):
    import onnxruntime as ort

    from effstack.ladder import pipeline
    from effstack.models import load_model

    x = np.random.default_rng(0).normal(size=(128, 16)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)  # inputs only: no labels for an embedding model
    truth = _embed(load_model(SPEC).module, x)
    results = []
    real = pipeline.run_ladder
    monkeypatch.setattr(pipeline, "run_ladder", lambda *a, **kw: results.append(real(*a, **kw)) or results[-1])

    out = tmp_path / "l.json"
    assert main(["ladder", SPEC, "--task", "embedding", "--data", str(tmp_path / "eval.npz"), "--engines",
                 "onnxruntime", "--precisions", "", "--latency-budget", "500ms", "--seconds", "0.03", "--max-batch",
                 "4", "--no-prune", "--quiet", "--json", str(out)]) == 0
    assert "recall@10 of the fp32 baseline's neighbours" in capsys.readouterr().out
    rungs = {r["step"]: r for r in json.loads(out.read_text())["rungs"]}
    assert rungs["baseline"]["measured"]["accuracy"] == 100.0
    # the same float function on another engine finds the same neighbours
    assert rungs["engine"]["status"] == "kept" and rungs["engine"]["measured"]["accuracy"] >= 99.0
    int8 = rungs["int8"]
    assert "a classifier must output" not in int8["reason"]  # the guard was asked for the embedding metric
    assert int8["status"] in ("kept", "rejected"), int8["reason"]  # an INT8 build was made and measured
    # its score is recall@10 of the float neighbours, recomputed here from the INT8 file run by ONNX Runtime itself
    (result,) = results
    artifact = result.variants[int8["variant"]].details["artifact"]
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == truth.shape
    assert int8["measured"]["accuracy"] == pytest.approx(_recall_at_10(got, truth), abs=0.5)
    if int8["status"] == "rejected" and "accuracy drop" in int8["reason"]:
        assert int8["measured"]["accuracy"] < 99.0  # rejected for accuracy: the tolerance is 1 point
