"""Every code path that differs by CPU, taken both ways by forcing the feature check (never by the machine)."""

from __future__ import annotations

import pytest

from effstack import hardware

# kind -> (native bf16, int8 dot product)
EXPECTED = {"zen3-avx2": (False, False), "zen5-avx512-vnni-bf16": (True, True), "xeon-amx": (True, True)}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_feature_checks_read_the_flags(force_cpu, kind):
    force_cpu(kind)
    assert (hardware.has_native_bf16(), hardware.has_int8_dot_product()) == EXPECTED[kind]


def test_amx_alone_counts_for_both(force_cpu):
    force_cpu(("avx2", "amx_tile", "amx_bf16", "amx_int8"))
    assert hardware.has_native_bf16() and hardware.has_int8_dot_product()
    force_cpu(("avx2", "avx_vnni"))  # VNNI in AVX2 form (Alder Lake and later): int8 dot product, no bf16
    assert not hardware.has_native_bf16() and hardware.has_int8_dot_product()


@pytest.mark.parametrize("kind, want", [("zen3-avx2", "off"), ("zen5-avx512-vnni-bf16", "bf16")])
def test_training_autocasts_bf16_only_where_it_is_native(force_cpu, kind, want):
    from effstack.train.loop import resolve_amp

    force_cpu(kind)
    assert resolve_amp("auto") == want
    assert resolve_amp("off") == "off" and resolve_amp("bf16") == "bf16"  # what the user asks is kept


@pytest.mark.parametrize("kind, reduce", [("zen3-avx2", True), ("zen5-avx512-vnni-bf16", False)])
def test_onnxruntime_int8_keeps_7_bit_weights_only_without_vnni(force_cpu, kind, reduce):
    pytest.importorskip("onnxruntime")
    from effstack.engines.onnxruntime import resolve_knobs

    force_cpu(kind)
    assert resolve_knobs({}, "int8")["reduce_range"] is reduce
    assert resolve_knobs({"reduce_range": not reduce}, "int8")["reduce_range"] is (not reduce)  # the user's wins


@pytest.mark.parametrize("kind, fix", [("zen3-avx2", "enable"), ("zen5-avx512-vnni-bf16", "first_layer")])
def test_openvino_overflow_fix_follows_the_int8_dot_product(force_cpu, kind, fix):
    pytest.importorskip("openvino")
    from effstack.engines import SessionOptions
    from effstack.engines.openvino import resolve_knobs

    force_cpu(kind)
    assert resolve_knobs(SessionOptions(precision="int8"))["overflow_fix"] == fix


@pytest.mark.parametrize("kind", ["zen3-avx2", "zen5-avx512-vnni-bf16"])
def test_torch_offers_bf16_only_where_it_is_native(force_cpu, kind, tiny_cnn):
    from effstack.engines import SessionOptions, get_engine
    from effstack.errors import PrecisionError

    force_cpu(kind)
    engine = get_engine("torch")
    if hardware.has_native_bf16():
        with engine.load(tiny_cnn, SessionOptions(precision="bf16")) as s:  # autocast, emulated if need be
            assert s.infer(tiny_cnn.input.example(2)).shape == (2, 10)
    else:
        with pytest.raises(PrecisionError, match="no native bf16"):
            engine.load(tiny_cnn, SessionOptions(precision="bf16"))


@pytest.mark.parametrize("kind, amp", [("zen3-avx2", "off"), ("zen5-avx512-vnni-bf16", "bf16")])
def test_training_learns_either_way(force_cpu, kind, amp):
    torch = pytest.importorskip("torch")
    import numpy as np

    from effstack.train import TrainConfig, fit

    force_cpu(kind)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 8)) * 3
    y = rng.integers(0, 4, 256)
    x = (centers[y] + rng.standard_normal((256, 8))).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    r = fit(net, (x[:192], y[:192]), TrainConfig(epochs=4, batch_size=32, lr=1e-2, progress=False),
            val=(x[192:], y[192:]))
    assert r.amp == amp and r.val_top1 > 90


def test_openvino_refuses_bf16_where_its_plugin_lacks_it(monkeypatch, tiny_cnn):
    pytest.importorskip("openvino")
    from effstack.engines import SessionOptions, get_engine
    from effstack.engines import openvino as ov_engine
    from effstack.errors import PrecisionError

    monkeypatch.setattr(ov_engine, "cpu_has_bf16", lambda: False)
    with pytest.raises(PrecisionError, match="no bf16 support") as info:
        get_engine("openvino").load(tiny_cnn, SessionOptions(precision="bf16"))
    assert "\n" not in str(info.value)
