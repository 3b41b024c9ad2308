"""``effstack ladder`` and ``effstack demo --quick`` for real, on tiny models (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from effstack.cli.main import main


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effstack", *args], capture_output=True, text=True, timeout=timeout)


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
    assert (tmp_path / "r.html").read_text().count("<svg") == 3
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["rung"] == data["final"]


def test_infeasible_budget_exits_3_naming_the_fastest_p99(tmp_path):
    proc = _run("ladder", "effstack.testing:tiny_mlp", "--engines", "onnxruntime", "--precisions", "",
                "--latency-budget", "1us", "--seconds", "0.05", "--max-batch", "2", "--quiet", "--no-prune",
                "--bundle", str(tmp_path / "b"))
    assert proc.returncode == 3, proc.stderr
    assert "fastest p99 seen was" in proc.stderr and "--latency-budget" in proc.stderr
    assert not (tmp_path / "b").exists()  # nothing is bundled when nothing meets the budget


@pytest.mark.parametrize("args, message", [
    (["--latency-budget", "fast"], "duration"),
    (["--max-drop", "lots"], "max drop"),
    (["--time-budget", "soon"], "time budget"),
    (["--train-data", "x.npz"], "--train-data needs --data"),
])
def test_bad_flags_are_one_line_exit_2(capsys, args, message):
    assert main(["ladder", "effstack.testing:tiny_mlp", "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


@pytest.mark.slow
def test_demo_quick_prints_the_ladder_and_writes_everything(tmp_path):
    proc = _run("demo", "--quick", "--quiet", "--out", str(tmp_path / "demo"), timeout=900)
    assert proc.returncode in (0, 3), proc.stderr
    data = json.loads((tmp_path / "demo" / "ladder.json").read_text())
    rungs = {r["step"]: r for r in data["rungs"]}
    assert rungs["distill"]["status"] in ("kept", "rejected")  # a student was really trained and measured
    assert rungs["baseline"]["measured"]["accuracy"] > 20  # a synthetic-trained teacher, scored on real digits
    assert (tmp_path / "demo" / "report.html").is_file()
    if proc.returncode == 0:
        assert (tmp_path / "demo" / "bundle" / "serving.json").is_file()
    assert "ladder for demo" in proc.stdout
