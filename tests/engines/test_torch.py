"""PyTorch engines: bf16 is offered only where the CPU runs it natively, and is right when it runs."""

from __future__ import annotations

import pytest

import effstack.engines.torch_eager as torch_eager
from effstack.engines import SessionOptions, get_engine
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
