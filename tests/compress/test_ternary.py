"""Ternary (1.58-bit) weights: absmean codes, STE training, packing, sizes, INT8 export, errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from effstack.compress import TernaryConfig, ternarize  # noqa: E402
from effstack.compress.ternary import pack_ternary, unpack_ternary  # noqa: E402
from effstack.errors import ConfigError, InputError  # noqa: E402
from effstack.train import TrainConfig, evaluate, fit  # noqa: E402


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.3
    x[y == 1, :, :4] += 1.0  # class 1: bright top half
    return x, y.astype(np.int64)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 2))
    fit(net, _data(), TrainConfig(epochs=4, lr=1e-2, batch_size=16, progress=False))
    return net


@pytest.mark.parametrize("packing, per_byte", [("2bit", 4), ("base3", 5)])
def test_pack_round_trip(packing, per_byte):
    codes = np.random.default_rng(0).integers(-1, 2, 103).astype(np.int8)
    packed = pack_ternary(codes, packing)
    assert len(packed) == -(-103 // per_byte)
    assert np.array_equal(unpack_ternary(packed, 103, packing), codes)
    with pytest.raises(InputError, match="must be -1, 0 or 1"):
        pack_ternary(np.array([2]), packing)


def test_ternarize_gives_ternary_weights_and_sizes(trained):
    before = [p.clone() for p in trained.parameters()]
    r = ternarize(trained, _data(), TernaryConfig(train=TrainConfig(epochs=2, lr=2e-3, batch_size=16, progress=False)), val=_data(64, 1))
    assert all(torch.equal(a, b) for a, b in zip(before, trained.parameters()))  # input untouched
    assert r.ternary_layers == ["2.layer"] and r.int8_layers == ["0.layer", "6.layer"]  # stem, head stay 8-bit
    codes, gamma = r.codes["2.layer"]
    assert set(np.unique(codes)) <= {-1, 0, 1} and gamma > 0
    w = dict(r.model.named_modules())["2.layer"].weight
    assert torch.allclose(w, torch.from_numpy(codes).float() * gamma)  # the module holds exactly gamma * codes
    s = r.sizes
    assert s["ternary_weights"] == codes.size and s["bits_per_weight"] == 2.0
    assert s["weights_packed_bytes"] < s["weights_fp32_bytes"] and 0 < s["weights_ratio"] < 1
    assert len(r.packed()["2.layer"]) == -(-codes.size // 4)
    assert evaluate(r.model, _data(64, 1)) > 80
    assert r.to_dict()["sizes"] == s


def test_ternary_export_runs_int8_with_ternary_weights(trained):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from effstack.compress.sensitivity import run_onnx

    cfg = TernaryConfig(train=TrainConfig(epochs=1, lr=2e-3, batch_size=16, progress=False), skip=(), packing="base3")
    r = ternarize(trained, _data(), cfg)
    path = r.export_onnx(_data()[0][:32])
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    q = [a for n, a in inits.items() if n.endswith("weight_quantized")]
    assert len(q) == 3 and all(a.dtype == np.int8 and len(np.unique(a)) <= 3 for a in q)
    x, y = _data(64, 1)
    with torch.no_grad():
        ref = r.model(torch.from_numpy(x)).argmax(1).numpy()
    assert (run_onnx(path, x).argmax(1) == ref).mean() > 0.9


def test_ternary_errors(trained):
    with pytest.raises(ConfigError, match="packing must be one of"):
        TernaryConfig(packing="3bit")
    with pytest.raises(ConfigError, match="act_bits must be 8 or None"):
        TernaryConfig(act_bits=4)
    with pytest.raises(ConfigError, match="not a compute layer"):
        ternarize(trained, _data(), TernaryConfig(skip=("head",)))
    with pytest.raises(ConfigError, match="no layer is left"):
        ternarize(trained, _data(), TernaryConfig(skip=("0", "2", "6")))
    cfg = TernaryConfig(skip=["0"])
    assert TernaryConfig.from_dict(cfg.to_dict()) == cfg
