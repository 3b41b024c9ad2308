"""One conformance suite over every installed engine and each precision it claims.

Every engine's output is compared with an independent reference: a forward pass written out here in
numpy (float64), from the weights in the model's state dict — never through an effstack engine or the
model's own ``forward``. fp32 must match it within 1e-4 relative error, bf16/fp16 within 1e-2, and INT8
must keep a signal-to-noise floor (allclose is the wrong test for quantized outputs).
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
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which the tiny models use


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


# -- the reference: numpy, float64, written out layer by layer ----------------------------------------------

def _conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 1) -> np.ndarray:
    """Cross-correlation of ``x`` (N, C, H, W) with ``w`` (O, C, k, k), zero padding, no bias."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]  # (N, C, ho, wo)
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def _bn(x: np.ndarray, sd: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """BatchNorm2d in inference: the running statistics, then the affine weight and bias."""
    shape = (1, -1, 1, 1)
    mean, var = sd[f"{prefix}.running_mean"].reshape(shape), sd[f"{prefix}.running_var"].reshape(shape)
    return (x - mean) / np.sqrt(var + BN_EPS) * sd[f"{prefix}.weight"].reshape(shape) + \
        sd[f"{prefix}.bias"].reshape(shape)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _head(x: np.ndarray, sd: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """Global average pool, flatten, linear."""
    return x.mean(axis=(2, 3)) @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]


def _tiny_cnn_forward(x: np.ndarray, sd: dict[str, np.ndarray]) -> np.ndarray:
    """effstack.testing.tiny_cnn: (conv3x3 - BN - ReLU) x 3 (the second with stride 2), pool, linear."""
    y = _relu(_bn(_conv2d(x, sd["0.weight"]), sd, "1"))
    y = _relu(_bn(_conv2d(y, sd["3.weight"], stride=2), sd, "4"))
    y = _relu(_bn(_conv2d(y, sd["6.weight"]), sd, "7"))
    return _head(y, sd, "11")


def _tiny_resnet_forward(x: np.ndarray, sd: dict[str, np.ndarray]) -> np.ndarray:
    """effstack.testing.tiny_resnet: conv - BN - ReLU, two residual blocks, pool, linear."""
    y = _relu(_bn(_conv2d(x, sd["0.weight"]), sd, "1"))
    for block in ("3", "4"):
        z = _relu(_bn(_conv2d(y, sd[f"{block}.c1.weight"]), sd, f"{block}.b1"))
        y = _relu(y + _bn(_conv2d(z, sd[f"{block}.c2.weight"]), sd, f"{block}.b2"))
    return _head(y, sd, "7")


_FORWARD = {"tiny_cnn": (_tiny_cnn_forward, {"0", "1", "3", "4", "6", "7", "11"}),
            "tiny_resnet": (_tiny_resnet_forward, {"0", "1", "3.c1", "3.b1", "3.c2", "3.b2", "4.c1", "4.b1", "4.c2",
                                                   "4.b2", "7"})}


def _state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().double().numpy() for k, v in model.module.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def _reference(model_name: str, model, x: np.ndarray) -> np.ndarray:
    forward, layers = _FORWARD[model_name]
    sd = _state_dict(model)
    # the reference knows every layer of the model: one it would silently ignore fails here instead
    assert {k.rsplit(".", 1)[0] for k in sd} == layers, sorted(sd)
    return forward(x.astype(np.float64), sd)


def test_the_reference_is_not_trivial(tiny_cnn, tiny_resnet):
    """The numpy forward passes depend on the input and on every weight (a reference that ignored them
    would make the conformance checks below vacuous)."""
    for name, model in (("tiny_cnn", tiny_cnn), ("tiny_resnet", tiny_resnet)):
        x = model.input.example(3, seed=7)
        ref = _reference(name, model, x)
        assert ref.shape == (3, 10) and np.all(np.isfinite(ref))
        assert rel_error(ref[0], ref[1]) > 1e-3 and rel_error(ref[1], ref[2]) > 1e-3  # rows differ
        forward, _ = _FORWARD[name]
        sd = _state_dict(model)
        for key in sd:  # every tensor of the state dict takes part
            changed = dict(sd, **{key: sd[key] * 1.5 + 0.1})
            assert rel_error(forward(x.astype(np.float64), changed), ref) > 1e-3, key


@pytest.mark.parametrize("model_name", ["tiny_cnn", "tiny_resnet"])
@pytest.mark.parametrize("engine_name,precision", list(_cells()))
def test_engine_matches_eager(engine_name, precision, model_name, request):
    model = request.getfixturevalue(model_name)
    x = model.input.example(3, seed=7)
    ref = _reference(model_name, model, x)  # before the engine sees the model
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
        assert snr_db(y1, ref[:1]) >= INT8_SNR_FLOOR_DB  # the second batch size computes the same thing
        assert counts.get("int8", 0) > 0, f"{engine_name} int8 ran no INT8 kernel: {counts}"
    else:
        assert rel_error(y, ref) <= TOLERANCE[precision]
        assert rel_error(y1, ref[:1]) <= TOLERANCE[precision]
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
