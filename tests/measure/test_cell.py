"""Cells: in-process rows, and isolated cells whose crash, hang or exception becomes one error row."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from effstack.measure.cell import Cell, run_cell
from effstack.models import ModelSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _children_import_tests(monkeypatch):
    # child processes import the crashing factories from tests.measure.fakes
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


def _cell(source: str, **kw) -> Cell:
    return Cell(model=ModelSpec(source).to_dict(), engine=kw.pop("engine", "null"), duration_s=0.05, **kw)


def test_in_process_cell_ok():
    row = run_cell(_cell("effstack.testing:tiny_mlp", batch=2), isolate=False)
    assert row.status == "ok", row.error
    assert (row.model, row.engine, row.batch, row.scenario) == ("tiny_mlp", "null", 2, "offline")
    assert row.samples > 0 and row.throughput > 0 and row.macs_per_sample > 0
    assert row.model_fingerprint and row.machine["cores"] >= 1 and "numpy" in row.versions


@pytest.mark.parametrize(
    "factory, reason",
    [
        ("exits", "exited with code 7"),
        ("segfaults", "crashed with SIGSEGV"),
        ("raises", "RuntimeError: factory failed on two lines"),
    ],
)
def test_isolated_failure_is_one_error_row(factory, reason):
    row = run_cell(_cell(f"tests.measure.fakes:{factory}"), isolate=True, timeout_s=120)
    assert row.status == "error"
    assert reason in row.error
    assert "\n" not in row.error
    assert (row.model, row.engine) == (factory, "null")


def test_isolated_segfault_quotes_stderr():
    row = run_cell(_cell("tests.measure.fakes:segfaults"), isolate=True, timeout_s=120)
    assert "stderr: Fatal Python error" in row.error


def test_isolated_timeout_is_one_error_row():
    row = run_cell(_cell("tests.measure.fakes:hangs"), isolate=True, timeout_s=1.5)
    assert row.status == "error" and row.error.startswith("timed out after 1.5 s")


def test_unknown_engine_and_precision_are_error_rows():
    row = run_cell(_cell("effstack.testing:tiny_mlp", engine="tensorflow"), isolate=False)
    assert row.status == "error" and "unknown engine 'tensorflow'" in row.error
    row = run_cell(_cell("effstack.testing:tiny_mlp", precision="int4"), isolate=False)
    assert row.status == "error" and "precision must be one of" in row.error


def test_server_cell_needs_a_rate():
    row = run_cell(_cell("effstack.testing:tiny_mlp", scenario="server"), isolate=False)
    assert row.status == "error" and "rate_qps" in row.error
