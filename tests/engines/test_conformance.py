"""One conformance suite over every installed engine and each precision it claims.

fp32 must match eager PyTorch within 1e-4 relative error, bf16/fp16 within 1e-2, and INT8 must keep
a signal-to-noise floor (allclose is the wrong test for quantized outputs).
"""

from __future__ import annotations

import numpy as np
import pytest

from effstack.engines import ENGINES, SessionOptions, get_engine
from effstack.engines.base import count_precisions
from effstack.errors import EngineUnavailableError, InputError, MissingDependencyError

from ..conftest import rel_error, snr_db

TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 1e-2}
INT8_SNR_FLOOR_DB = 15.0


def _cells():
    for name in ENGINES.names():
        if name == "null":
            continue
        try:
            engine = get_engine(name)
        except (MissingDependencyError, EngineUnavailableError) as exc:
            yield pytest.param(name, "fp32", marks=pytest.mark.skip(reason=f"{name}: {exc}"), id=f"{name}-skipped")
            continue
        for precision in engine.precisions:
            yield pytest.param(name, precision, id=f"{name}-{precision}")


def _reference(model, x):
    import torch

    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("model_name", ["tiny_cnn", "tiny_resnet"])
@pytest.mark.parametrize("engine_name,precision", list(_cells()))
def test_engine_matches_eager(engine_name, precision, model_name, request):
    model = request.getfixturevalue(model_name)
    x = model.input.example(3, seed=7)
    ref = _reference(model, x)
    options = SessionOptions(precision=precision, batch=3, calibration=[model.input.example(8, seed=s) for s in range(4)])
    with get_engine(engine_name).load(model, options) as session:
        y = session.infer(x)
        y1 = session.infer(x[:1])  # a second batch size through the same session
        counts = session.executed_precision()
        layers = session.layer_precisions()
    if layers:  # engines that can name their layers: the per-layer view and the counts agree
        assert count_precisions(layers) == counts
    assert y.shape == ref.shape and y.dtype == np.float32
    assert y1.shape == (1, *ref.shape[1:])
    if precision == "int8":
        assert snr_db(y, ref) >= INT8_SNR_FLOOR_DB
        assert counts.get("int8", 0) > 0, f"{engine_name} int8 ran no INT8 kernel: {counts}"
    else:
        assert rel_error(y, ref) <= TOLERANCE[precision]
        assert counts.get(precision, 0) > 0, f"{engine_name} {precision} reports {counts}"


@pytest.mark.parametrize("engine_name", [n for n in ENGINES.names() if ENGINES.is_available(n)])
def test_wrong_input_is_one_clear_line(engine_name, tiny_cnn):
    try:
        engine = get_engine(engine_name)
    except EngineUnavailableError as exc:
        pytest.skip(str(exc))
    with engine.load(tiny_cnn, SessionOptions()) as session:
        with pytest.raises(InputError, match=r"must have shape \(N, 3, 32, 32\), got \(2, 3, 16, 16\)"):
            session.infer(np.zeros((2, 3, 16, 16), np.float32))
        with pytest.raises(InputError, match="must be float32, got float64"):
            session.infer(np.zeros((2, 3, 32, 32), np.float64))
        with pytest.raises(InputError, match="numpy array"):
            session.infer([[1.0]])
