"""The README's Python examples run, so the documentation cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert _blocks()


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_python_example_runs(index, capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    exec(compile(_blocks()[index], f"README.md[python {index}]", "exec"), {})
    assert capsys.readouterr().out.strip()
