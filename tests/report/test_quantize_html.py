"""The quantize report as HTML: a standalone page and a section for the ladder report; ``quantize --html``."""

import re

import numpy as np
import pytest

from effstack.compress import QuantizeConfig, quantize
from effstack.models import ModelSpec, load_model
from effstack.report.html import quantize_html
from effstack.testing.trained import digits_data

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")


def fake_measure(session, x):
    """Samples/s by what the session really runs (no timing in tests)."""
    return 200.0 if session.executed_precision().get("int8") else 100.0


@pytest.fixture(scope="module")
def result():
    """A model with an outlier layer: plain INT8 fails, the fallback keeps that layer float."""
    model = load_model(ModelSpec("effstack.testing.trained:digits_cnn", options={"outlier": 300.0}))
    r = quantize(model, QuantizeConfig(try_methods=False), digits_data("test"), measure=fake_measure)
    assert r.accepted and r.kept_float and r.sensitivity, r.reason
    return r


def _cells(page: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", page)


def test_page_has_the_tables_and_the_sensitivity_plot(result):
    parity = [{"a": "pytorch fp32", "b": "onnxruntime int8", "top1_agreement": 99.5, "snr_db": 31.25}]
    page = quantize_html(result, parity=parity)
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert "<script" not in page and "src=" not in page and "href=" not in page  # self-contained
    cells = _cells(page)
    d = result.to_dict()
    assert f"{d['fp32_score']:.2f}" in cells and f"{d['int8_score']:.2f}" in cells
    assert d["method"] in cells and ", ".join(d["kept_float"]) in cells
    assert "200.0" in cells and "100.0" in cells and "2.00x" in cells  # int8 and fp32 samples/s, the speed-up
    for row in d["sensitivity"]:  # every layer in the table, with its SNR
        assert row["layer"] in cells and f"{row['snr_db']:.2f}" in cells
    assert "99.50" in cells and "31.25" in cells  # parity
    svg = re.search(r'<svg[^>]*aria-label="Per-layer sensitivity[^"]*".*?</svg>', page)
    assert svg, "no sensitivity plot"
    assert svg.group(0).count("<circle") == len(d["sensitivity"])
    assert d["kept_float"][0] in svg.group(0)  # the layer kept float is named on the plot


def test_section_fits_in_the_ladder_report_and_reads_the_json_document(result):
    section = quantize_html(result, page=False)
    assert section.startswith('<section class="quantize">') and "<html" not in section
    assert quantize_html({"quantize": result.to_dict(), "parity": None}, page=False) == section
    from effstack.report.html import ladder_html
    from tests.ladder.test_bundle_report import fixed_result

    page = ladder_html(fixed_result(), sections=(section,))
    assert page.endswith(section + "</body></html>") and page.count("<svg") == 4  # the ladder's 3 plots + this one


def test_cli_writes_html_atomically_even_when_rejected(tmp_path, capsys):
    from effstack.cli.main import main

    x, y = digits_data("test")
    npz = tmp_path / "digits.npz"
    np.savez(npz, x=x, y=y)
    out, page = tmp_path / "m.onnx", tmp_path / "q" / "report.html"
    rc = main(["quantize", "effstack.testing.trained:digits_cnn", "--data", str(npz), "--only-method",
               "--speedup-min", "1000", "--bench-seconds", "0.05", "--output", str(out), "--html", str(page)])
    assert rc == 3 and not out.exists()  # rejected for speed: no model, but the report
    text = page.read_text()
    assert "REJECTED" in text and "samples/s" in text and "<table>" in text
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temporary left behind
    assert f"wrote {page}" in capsys.readouterr().out
