"""Tables and JSON files from fixed rows (no measuring)."""

from __future__ import annotations

import io
import json

import pytest

from effstack.measure.row import ResultRow
from effstack.errors import ArtifactError
from effstack.report import format_text, print_rows, read_report, read_rows, render_table, write_rows
from effstack.report.table import COLUMNS


def _rows() -> list[ResultRow]:
    ok = ResultRow(model="tiny_cnn", engine="openvino", precision="int8", executed_precision="int8 95% (54/57), fp32 3",
                   executed_counts={"int8": 54, "fp32": 3}, batch=8, threads=2, scenario="offline",
                   throughput=1234.5, throughput_min=1200.0, throughput_max=1250.0, spread_pct=4.05,
                   peak_fraction=0.315, noisy=True, other_cpu_pct_core=37.0, machine={"cpu": "test"},
                   versions={"numpy": "2"})
    latency = ResultRow(model="tiny_cnn", engine="onnxruntime", precision="fp32", executed_precision="fp32",
                        batch=1, threads=2, throughput=500.0, spread_pct=0.0, p50_ms=1.95, p99_ms=2.5, noisy=False)
    skipped = ResultRow(model="tiny_cnn", engine="torch", precision="int8").failed("skipped", "no int8 in torch eager")
    error = ResultRow(model="tiny_cnn", engine="tensorrt", precision="fp16").failed("error", "crashed with SIGSEGV\nat x")
    return [ok, latency, skipped, error]


def test_plain_text_table():
    text = format_text(_rows())
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[0].split()[:3] == ["model", "engine", "precision"]
    assert "int8 → int8 95% (54/57), fp32 3" in lines[1]
    assert "1,234 ±2%" in lines[1] and "31.5%" in lines[1] and "NOISY 37%" in lines[1]
    assert "1.95" in lines[2] and "2.50" in lines[2]
    assert lines[3].endswith("skipped: no int8 in torch eager")
    assert lines[4].endswith("error: crashed with SIGSEGV at x")


def test_print_rows_plain_when_not_a_terminal():
    buf = io.StringIO()
    print_rows(_rows(), file=buf, title="results")
    out = buf.getvalue()
    assert out.startswith("results\n") and "│" not in out and "tiny_cnn" in out


def test_rich_table_has_every_row_and_column():
    table = render_table(_rows(), title="t")
    assert table.row_count == 4
    assert [c.header for c in table.columns] == list(COLUMNS)


def test_json_round_trip(tmp_path):
    rows = _rows()
    path = write_rows(tmp_path / "out" / "rows.json", rows, extra={"command": "effstack bench"})
    doc = json.loads(path.read_text())
    assert set(doc) >= {"schema", "rows", "machine", "versions", "command"}
    assert doc["machine"] == {"cpu": "test"}  # taken from the first row that has it
    assert read_rows(path) == rows
    report = read_report(path)
    assert report["command"] == "effstack bench" and report["rows"][2].status == "skipped"
    assert [p.name for p in path.parent.iterdir()] == ["rows.json"]  # no temporary file left behind


def test_reading_bad_files_is_one_line(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_rows(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ArtifactError, match="cannot read"):
        read_rows(bad)
    bad.write_text(json.dumps({"engines": []}))
    with pytest.raises(ArtifactError, match="not an effstack results file"):
        read_rows(bad)
