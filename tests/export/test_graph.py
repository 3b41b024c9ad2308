"""Folding zero Pads into convolutions: exact where it applies, untouched where it does not."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from effstack.export.graph import fold_pads  # noqa: E402


def _model(pads, *, mode="constant", fill=None, consumer="Conv", conv_pads=(1, 0, 0, 1), extra_output=False):
    rng = np.random.default_rng(0)
    channels = 3 + pads[1] + pads[5]
    w = numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w")
    p = numpy_helper.from_array(np.array(pads, np.int64), "pads")
    inputs = ["x", "pads"] + (["fill"] if fill is not None else [])
    inits = [w, p] + ([numpy_helper.from_array(np.array(fill, np.float32), "fill")] if fill is not None else [])
    nodes = [helper.make_node("Pad", inputs, ["padded"], mode=mode)]
    if consumer == "Conv":
        nodes.append(helper.make_node("Conv", ["padded", "w"], ["y"], strides=[2, 2], pads=list(conv_pads)))
    else:
        nodes.append(helper.make_node("Relu", ["padded"], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("padded", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model):
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


@pytest.mark.parametrize("pads", [[0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0, 2, 2], [0, 0, 0, 3, 0, 0, 2, 0]])
def test_zero_pad_folds_into_the_conv_exactly(pads):
    model = _model(pads)
    before = _run(model)
    assert fold_pads(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    assert "pads" not in {t.name for t in model.graph.initializer}
    conv_pads = [a for a in model.graph.node[0].attribute if a.name == "pads"][0].ints
    assert list(conv_pads) == [1 + pads[2], pads[3], pads[6], 1 + pads[7]]  # the conv's own pads kept
    np.testing.assert_array_equal(_run(model), before)


@pytest.mark.parametrize("kw", [
    {"pads": [0, 0, 0, 0, 0, 0, 1, 1], "mode": "reflect"},
    {"pads": [0, 0, 0, 0, 0, 0, 1, 1], "fill": 0.5},
    {"pads": [0, 1, 0, 0, 0, 0, 1, 1]},          # pads the channels
    {"pads": [0, 0, 0, 0, 0, 0, -1, 1]},         # crops
    {"pads": [0, 0, 0, 0, 0, 0, 1, 1], "consumer": "Relu"},
    {"pads": [0, 0, 0, 0, 0, 0, 1, 1], "extra_output": True},
])
def test_pads_that_are_not_a_convs_padding_stay(kw):
    model = _model(**kw)
    before = _run(model)
    assert fold_pads(model) == 0
    assert [n.op_type for n in model.graph.node][0] == "Pad"
    np.testing.assert_array_equal(_run(model), before)


def test_explicit_zero_fill_folds():
    model = _model([0, 0, 0, 0, 0, 0, 1, 1], fill=0.0)
    before = _run(model)
    assert fold_pads(model) == 1
    assert {t.name for t in model.graph.initializer} == {"w"}
    np.testing.assert_array_equal(_run(model), before)
