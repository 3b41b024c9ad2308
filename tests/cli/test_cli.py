"""The command line: a real bench run on tiny models, JSON out, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from effstack.cli.main import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effstack", *args], capture_output=True, text=True, timeout=300)


def test_bench_tiny_model_writes_json(tmp_path):
    out = tmp_path / "rows.json"
    proc = _run(
        "bench", "effstack.testing:tiny_cnn", "--engine", "null,torch", "--precision", "fp32,int8",
        "--batch", "1,4", "--duration", "0.2", "--repeats", "2", "--no-peak", "--json", str(out),
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    cells = {(r["engine"], r["precision"], r["batch"]): r for r in rows}
    assert len(cells) == 8
    assert cells[("torch", "fp32", 4)]["status"] == "ok"
    assert cells[("torch", "fp32", 4)]["throughput"] > 0
    assert cells[("torch", "int8", 1)]["status"] == "skipped"  # torch eager has no int8: a row says why
    assert "int8" in cells[("torch", "int8", 1)]["error"]
    assert "tiny_cnn" in proc.stdout  # the table names the model


def test_unknown_model_is_one_line_exit_2(capsys):
    assert main(["bench", "resnet5O", "--engine", "null"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Did you mean: resnet50" in err


def test_unknown_engine_is_one_line_exit_2(capsys):
    assert main(["bench", "effstack.testing:tiny_cnn", "--engine", "tensorflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effstack: error: unknown engine 'tensorflow'")


def test_bad_knob_is_one_line(capsys):
    assert main(["bench", "effstack.testing:tiny_cnn", "--engine", "null", "--knob", "nonsense"]) == 2
    assert "--knob must look like" in capsys.readouterr().err


def test_bad_batch_list_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "effstack.testing:tiny_cnn", "--batch", "1,x"])
    assert info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_engines_lists_availability(tmp_path):
    out = tmp_path / "engines.json"
    assert main(["engines", "--json", str(out)]) == 0
    engines = {e["engine"]: e for e in json.loads(out.read_text())["engines"]}
    assert engines["null"]["available"] and engines["torch"]["available"]
    assert not engines["tensorrt"]["available"] or engines["tensorrt"]["device"] == "cuda"


def test_peak_prints_a_table_of_each_precisions_peak_and_paths_and_writes_the_record(capsys, tmp_path, monkeypatch):
    from effstack.measure import peak

    record = {"rates": {"int8": {"gops": 100.0, "path": "torch", "candidates": {"torch": 100.0, "onnxruntime": 80.0},
                                 "observed": {"gops": 120.0, "path": "observed:openvino/m b8"}},
                        "fp32": {"gops": 50.0, "path": "onnxruntime", "candidates": {"onnxruntime": 50.0}}},
              "errors": {"bf16/torch": "RuntimeError: no bf16 here"}, "threads": 2, "size": 256,
              "machine": {"kind": "amd-zen3-avx2"}, "measured_at": "2026-12-05T00:00:00+00:00"}
    monkeypatch.setattr(peak, "peak_rates", lambda refresh=False: record)
    monkeypatch.setenv("COLUMNS", "160")  # rich wraps cells to the terminal's width
    out = tmp_path / "peak.json"
    assert main(["peak", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "amd-zen3-avx2" in text and "120.0" in text and "torch 100, onnxruntime 80" in text
    assert "RuntimeError: no bf16 here" in text and "50.0" in text
    assert json.loads(out.read_text()) == record
