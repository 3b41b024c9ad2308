"""PyTorch engines: bf16 is offered only where the CPU runs it natively, and is right when it runs."""

from __future__ import annotations

import copy
import types

import pytest

import effstack.engines.torch_eager as torch_eager
from effstack.engines import SessionOptions, get_engine
from effstack.engines.base import NOT_OBSERVED
from effstack.errors import PrecisionError

from ..conftest import rel_error


def test_bf16_refused_without_native_support(monkeypatch, tiny_cnn):
    monkeypatch.setattr(torch_eager, "has_native_bf16", lambda: False)
    engine = get_engine("torch")
    assert engine.precisions == ("fp32",)
    with pytest.raises(PrecisionError, match="no native bf16"):
        engine.load(tiny_cnn, SessionOptions(precision="bf16"))


def test_bf16_autocast_matches_fp32(monkeypatch, tiny_cnn):
    monkeypatch.setattr(torch_eager, "has_native_bf16", lambda: True)
    x = tiny_cnn.input.example(4, seed=3)
    with get_engine("torch").load(tiny_cnn, SessionOptions()) as fp32, \
            get_engine("torch").load(tiny_cnn, SessionOptions(precision="bf16")) as bf16:
        assert rel_error(bf16.infer(x), fp32.infer(x)) <= 1e-2
        assert bf16.executed_precision() == {"bf16": 4}


def test_channels_last_knob_is_recorded(tiny_cnn):
    with get_engine("torch").load(tiny_cnn, SessionOptions(knobs={"channels_last": True})) as s:
        assert s.settings()["channels_last"] is True
        assert s.infer(tiny_cnn.input.example(2)).shape == (2, 10)


def test_eager_observes_each_layers_precision_in_a_real_run(monkeypatch, tiny_cnn):
    monkeypatch.setattr(torch_eager, "has_native_bf16", lambda: True)  # bf16 autocast also where it is emulated
    x = tiny_cnn.input.example(2, seed=1)
    with get_engine("torch").load(tiny_cnn, SessionOptions(precision="bf16")) as bf16:
        assert bf16.executed_precision() == {NOT_OBSERVED: 4}  # nothing ran yet: nothing is claimed
        bf16.infer(x)
        assert bf16.executed_precision() == {"bf16": 4}
        assert set(bf16.layer_precisions().values()) == {"bf16"} and len(bf16.layer_precisions()) == 4
        assert not bf16._hooks  # observed once; later runs pay nothing
        with get_engine("torch").load(tiny_cnn, SessionOptions()) as fp32:  # the same module, shared
            fp32.infer(x)
            assert fp32.executed_precision() == {"fp32": 4}
        assert bf16.executed_precision() == {"bf16": 4}  # the other session's run did not overwrite it


def test_eager_reports_a_layer_autocast_left_in_float(monkeypatch, tiny_cnn):
    # what the hooks see is what ran: a layer forced to fp32 under bf16 autocast shows up as fp32
    import torch

    monkeypatch.setattr(torch_eager, "has_native_bf16", lambda: True)
    model = copy.deepcopy(tiny_cnn)
    linear = next(m for m in model.module.modules() if isinstance(m, torch.nn.Linear))
    forward = linear.forward

    def fp32_forward(t):
        with torch.autocast("cpu", enabled=False):
            return forward(t.float())

    linear.forward = fp32_forward
    with get_engine("torch").load(model, SessionOptions(precision="bf16")) as s:
        s.infer(model.input.example(1))
        assert s.executed_precision() == {"bf16": 3, "fp32": 1}


def test_compile_reads_precisions_from_its_graph_or_says_not_observed(monkeypatch, tiny_cnn):
    from effstack.engines.torch_compile import graph_precisions

    monkeypatch.setattr(torch_eager, "has_native_bf16", lambda: True)
    with get_engine("torch_compile").load(tiny_cnn, SessionOptions(precision="bf16", batch=2)) as s:
        assert s.executed_precision() == {"bf16": 4}  # read off the graph dynamo handed inductor at load
        assert s.infer(tiny_cnn.input.example(2)).shape == (2, 10)
    # a session whose graphs its backend never saw claims nothing, rather than the precision asked for
    unseen = torch_eager.TorchSession("torch_compile", tiny_cnn, SessionOptions(precision="bf16"), observed={})
    assert unseen.executed_precision() == {NOT_OBSERVED: 4}
    assert graph_precisions(types.SimpleNamespace(graph=types.SimpleNamespace(nodes=[]))) == {}


def test_compile_refuses_to_pass_off_eager_as_compiled(monkeypatch):
    # past dynamo's recompile limit a compiled call silently runs eager: the engine must say so, not time it
    from effstack.engines import torch_compile
    from effstack.errors import EngineError
    from effstack.models import load_model

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch_compile, "RECOMPILE_LIMIT", 1)
    model = load_model("effstack.testing:tiny_cnn")  # a fresh instance: its own guards
    with torch._dynamo.config.patch(recompile_limit=1):
        torch._dynamo.reset()
        try:
            get_engine("torch_compile").load(model, SessionOptions(batch=2)).close()  # the one compile allowed
            with pytest.raises(EngineError, match="did not compile") as info:
                get_engine("torch_compile").load(model, SessionOptions(batch=3))  # a recompile past the limit
            assert "\n" not in str(info.value)
        finally:
            torch._dynamo.reset()
    assert torch._dynamo.config.recompile_limit >= 8  # the patch is gone; the engine never lowers it
