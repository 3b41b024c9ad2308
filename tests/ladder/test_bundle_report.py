"""The bundle round-trip and the report's renderings (golden text, self-contained HTML)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from effstack.errors import ArtifactError, ConfigError
from effstack.ladder import Budget, Ladder, LadderResult, Variant
from effstack.ladder.bundle import read_bundle, write_bundle
from effstack.report.html import ladder_html, pareto_points
from effstack.report.ladder import ladder_text

from .test_ladder import CostModel, distiller, quantizer

GOLDEN = Path(__file__).with_name("ladder.golden.txt")


def fixed_result() -> LadderResult:
    result = Ladder(Variant("teacher", params=10_000, macs=2_000_000), Budget(20.0, "1.0", price_per_hour=1.2),
                    CostModel(), quantizer=quantizer, distiller=distiller, max_batch=64, model_name="teacher").climb()
    result.seconds = 12.0
    result.machine = {"cpu": "test cpu", "cores": 2, "isa": ["avx2"]}
    return result


def test_ladder_text_matches_golden():
    text = ladder_text(fixed_result())
    if os.environ.get("EFFSTACK_UPDATE_GOLDEN"):
        GOLDEN.write_text(text + "\n")
    assert text + "\n" == GOLDEN.read_text(), "rendering changed: rerun with EFFSTACK_UPDATE_GOLDEN=1 and review"


def test_html_is_self_contained_with_three_plots():
    html = ladder_html(fixed_result())
    assert html.count("<svg") == 3
    assert "<script" not in html and "src=" not in html and "href=" not in html
    assert "The ladder" in html and "Pareto" in html and "dollars per million" in html
    assert "distill_int8" in html


def test_pareto_front_keeps_only_undominated_points():
    measured = [{"variant": "a", "config": {}, "measured": {"p99_ms": 1.0, "throughput": 10.0}},
                {"variant": "b", "config": {}, "measured": {"p99_ms": 2.0, "throughput": 5.0}},   # dominated
                {"variant": "c", "config": {}, "measured": {"p99_ms": 3.0, "throughput": 30.0}},
                {"variant": "d", "config": {}, "measured": {"p99_ms": None, "throughput": 99.0}},  # no latency
                {"variant": "e", "config": {}, "measured": {"error": "x"}}]
    pts, front = pareto_points(measured)
    assert len(pts) == 3
    assert front == [(1.0, 10.0), (3.0, 30.0)]


@pytest.fixture()
def tiny_result():
    """A climbed ladder whose chosen variant is a real (tiny) torch model on ONNX Runtime."""
    from effstack.models import load_model

    model = load_model("effstack.testing:tiny_mlp")

    def measure(variant, config):
        from effstack.ladder import Measured
        speed = {"torch": 100.0, "onnxruntime": 400.0}.get(config.engine)
        if speed is None:
            return Measured(error="not here")
        return Measured(throughput=speed * config.batch ** 0.5, p99_ms=0.5 * config.batch, accuracy=90.0)

    ladder = Ladder(Variant("tiny_mlp", model, params=model.params), Budget(5.0), measure,
                    engines=("onnxruntime",), precisions=(), max_batch=8, model_name="tiny_mlp")
    return ladder.climb()


def test_bundle_round_trip_and_serving_config(tmp_path, tiny_result):
    out = write_bundle(tiny_result, tmp_path / "b")
    manifest, serving = read_bundle(out)
    assert manifest["kind"] == "effstack.bundle" and manifest["rung"] == tiny_result.final.step
    assert serving.engine == "onnxruntime" and serving.max_batch == tiny_result.final.config.batch
    assert serving.latency_budget_ms == 5.0
    assert Path(serving.model.source).name == "model.onnx" and Path(serving.model.source).is_file()
    assert json.loads((out / "ladder.json").read_text())["kind"] == "effstack.ladder"
    # effstack serve takes the folder as it is
    from effstack.serve.repository import resolve_target

    configs = resolve_target(str(out), {})
    assert list(configs) == ["tiny_mlp"] and configs["tiny_mlp"].engine == "onnxruntime"
    # writing again replaces the bundle in one step
    write_bundle(tiny_result, out)
    assert read_bundle(out)[0]["files"] == manifest["files"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_a_tampered_bundle_is_refused(tmp_path, tiny_result):
    out = write_bundle(tiny_result, tmp_path / "b")
    with open(out / "model.onnx", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ArtifactError, match="model.onnx.*does not match"):
        read_bundle(out)
    (out / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        read_bundle(out)
    with pytest.raises(ArtifactError, match="not an effstack bundle"):
        read_bundle(tmp_path)


def test_bundle_refuses_a_foreign_folder_and_an_infeasible_ladder(tmp_path, tiny_result):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not an effstack bundle"):
        write_bundle(tiny_result, other)
    assert (other / "keep.jpg").read_bytes() == b"x"
    tiny_result.infeasible = "no configuration meets the p99 budget"
    with pytest.raises(ConfigError, match="nothing to bundle"):
        write_bundle(tiny_result, tmp_path / "c")
