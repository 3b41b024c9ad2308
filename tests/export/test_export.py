"""Torch -> ONNX -> OpenVINO IR export: naming, caching, atomic writes, and the numerical check."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from effstack.errors import ArtifactError, ConfigError, MissingDependencyError
from effstack.models import LoadedModel, load_model

onnx = pytest.importorskip("onnx")

from effstack.export import export_onnx, export_openvino  # noqa: E402
from effstack.export import onnx as onnx_export  # noqa: E402


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh, empty cache root for this test only."""
    monkeypatch.setenv("EFFSTACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_export_names_file_by_fingerprint_and_keeps_batch_dynamic(tiny_cnn, cache):
    path = export_onnx(tiny_cnn)
    assert path == cache / "onnx" / f"tiny_cnn-{tiny_cnn.fingerprint}-op17.onnx"
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == [tiny_cnn.input.name]
    assert [o.name for o in proto.graph.output] == ["output"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert proto.opset_import[0].version == 17
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops  # BatchNorm folded into the convolutions


def test_second_export_is_a_cache_hit(tiny_cnn, cache, monkeypatch):
    import torch

    first = export_onnx(tiny_cnn)
    mtime = first.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("torch.onnx.export called on a cache hit")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    assert export_onnx(tiny_cnn) == first
    assert first.stat().st_mtime_ns == mtime


def test_explicit_cache_dir_and_no_leftover_temp_files(tiny_resnet, tmp_path):
    path = export_onnx(tiny_resnet, opset=13, cache_dir=tmp_path / "here")
    assert path.parent == tmp_path / "here" and path.name.endswith("-op13.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_numerical_check_catches_a_broken_export(tiny_cnn, cache, monkeypatch):
    real = onnx_export._torch_export

    def broken(model, path, opset):  # export, then perturb the classifier bias as a buggy exporter might
        real(model, path, opset)
        proto = onnx.load(str(path))
        gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
        bias = next(t for t in proto.graph.initializer if t.name == gemm.input[2])
        values = onnx.numpy_helper.to_array(bias) + 0.05
        bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
        onnx.save(proto, str(path))

    monkeypatch.setattr(onnx_export, "_torch_export", broken)
    with pytest.raises(ArtifactError, match=r"differs from PyTorch by .* more than 1e-04") as info:
        export_onnx(tiny_cnn)
    assert "\n" not in str(info.value)
    assert not list((cache / "onnx").iterdir())  # nothing cached, not even a temp file


def test_model_given_as_onnx_is_returned_as_is(tiny_cnn, cache, tmp_path):
    src = tmp_path / "given.onnx"
    src.write_bytes(export_onnx(tiny_cnn).read_bytes())
    model = load_model(str(src))
    assert export_onnx(model) == src


def test_bad_opset_is_a_config_error(tiny_cnn, cache):
    with pytest.raises(ConfigError, match="opset must be between"):
        export_onnx(tiny_cnn, opset=3)


def test_missing_onnx_names_the_extra(tiny_cnn, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'effstack\[onnx\]'"):
        export_onnx(tiny_cnn)


def test_hand_built_model_gets_a_fingerprint(cache):
    from effstack.testing import tiny_mlp

    module = tiny_mlp()
    model = LoadedModel("mlp", spec=None, input=module.input_spec, module=module)
    path = export_onnx(model)
    assert model.fingerprint and model.fingerprint in path.name


def test_openvino_ir_is_cached(tiny_cnn, cache, monkeypatch):
    ov = pytest.importorskip("openvino")
    xml = export_openvino(tiny_cnn)
    assert xml == cache / "openvino" / f"tiny_cnn-{tiny_cnn.fingerprint}.xml"
    assert xml.with_suffix(".bin").is_file()
    # weights stay fp32 on disk: compress_to_fp16=False
    consts = [op for op in ov.Core().read_model(str(xml)).get_ops() if op.get_type_name() == "Constant"]
    assert all(str(c.get_element_type()) != "<Type: 'float16'>" for c in consts)

    def no_convert(*args, **kwargs):
        raise AssertionError("convert_model called on a cache hit")

    monkeypatch.setattr(ov, "convert_model", no_convert)
    assert export_openvino(tiny_cnn) == xml


def test_openvino_export_of_a_corrupt_onnx_is_one_line(tmp_path, cache):
    pytest.importorskip("openvino")
    from effstack.models import InputSpec

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    model = LoadedModel("bad", spec=None, input=InputSpec(shape=(3, 8, 8)), onnx_path=bad, fingerprint="0" * 16)
    with pytest.raises(ArtifactError) as info:
        export_openvino(model)
    assert "\n" not in str(info.value) and "bad.onnx" in str(info.value)


def test_check_reports_the_error_it_measured(tiny_resnet, cache):
    path = export_onnx(tiny_resnet)
    err = onnx_export.check_onnx(tiny_resnet, Path(path))
    if err is not None:  # None only without onnxruntime
        assert 0 <= err <= 1e-4
