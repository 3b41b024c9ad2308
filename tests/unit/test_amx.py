"""AMX: detection (flags and the OS's tile permission), the kernel read-back, and the preference for the engine
whose kernels run on the tiles, each taken both ways by forcing the CPU (never by the machine)."""

from __future__ import annotations

import pytest

from effstack import hardware
from effstack.engines.base import kernel_isa
from effstack.errors import ConfigError
from effstack.plan import Candidate, Grid, Measurement, plan
from effstack.plan.prefer import AMX_MARGIN, default_precisions, pick, rank

XTILEDATA = 1 << 18


@pytest.mark.parametrize("kind, tiles, want", [
    ("zen3-avx2", True, (False, False, False)),
    ("zen5-avx512-vnni-bf16", True, (False, False, False)),
    ("xeon-amx", True, (True, True, True)),
    ("xeon-amx", False, (False, False, False)),  # flags listed, tiles not enabled by the OS
    (("avx512f", "amx_tile", "amx_bf16"), True, (True, False, True)),  # tiles with bf16 only
])
def test_amx_usable_needs_the_flags_and_the_os(force_cpu, kind, tiles, want):
    force_cpu(kind, tiles=tiles)
    assert (hardware.amx_usable(), hardware.amx_usable("int8"), hardware.amx_usable("bf16")) == want


def test_amx_usable_rejects_an_unknown_kind():
    with pytest.raises(ConfigError, match="int8, bf16"):
        hardware.amx_usable("fp16")


class FakePrctl:
    """arch_prctl over a permission mask: GET returns it, REQ grants XTILEDATA when ``grants``."""

    def __init__(self, mask: int = 0, grants: bool = True, fails: bool = False):
        self.mask, self.grants, self.fails, self.calls = mask, grants, fails, []

    def __call__(self, code: int, arg: int) -> tuple[int, int]:
        self.calls.append(code)
        if self.fails:
            raise OSError("no such syscall")
        if code == 0x1023:
            if self.grants and arg == 18:
                self.mask |= XTILEDATA
                return 0, 0
            return -1, 0
        return 0, self.mask


@pytest.mark.parametrize("prctl, want, calls", [
    (FakePrctl(mask=XTILEDATA | 0b11), True, [0x1022]),  # granted already: nothing requested
    (FakePrctl(mask=0b11), True, [0x1022, 0x1023, 0x1022]),  # granted on request
    (FakePrctl(mask=0b11, grants=False), False, [0x1022, 0x1023, 0x1022]),  # the kernel refuses (no AMX)
    (FakePrctl(fails=True), False, [0x1022]),  # no syscall at all
])
def test_tile_permission_logic(prctl, want, calls):
    assert hardware.xtiledata_permitted(prctl) is want
    assert prctl.calls == calls


def test_machine_info_reports_amx_from_the_forced_cpu(force_cpu, monkeypatch):
    force_cpu("xeon-amx")
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Intel Xeon", set(hardware.cpu_flags())))
    assert hardware.machine_info()["amx"] is True
    force_cpu("xeon-amx", tiles=False)
    assert hardware.machine_info()["amx"] is False


def test_kernel_isa_reads_kernel_names():
    assert kernel_isa({"brgconv_avx512_amx_I8": 52, "jit_avx512_I8": 1}) == "amx"
    assert kernel_isa({"brgconv_avx512_I8": 52, "jit_uni_I8": 1}) == "avx512"
    assert kernel_isa({"jit_avx2_FP32": 3}) == "avx2"
    assert kernel_isa({"unknown_f32": 1}) == "other"
    assert kernel_isa({}) == ""


# -- the preference ---------------------------------------------------------------------------------------


def test_rank_and_pick_within_and_beyond_the_margin():
    assert rank(100.0, "amx", True) == pytest.approx(100.0 * (1 + AMX_MARGIN))
    assert rank(-10.0, "amx", True) == pytest.approx(-10.0 * (1 - AMX_MARGIN))  # minus p99: less negative
    assert rank(100.0, "amx", False) == 100.0 and rank(100.0, "avx512", True) == 100.0
    near = [("ort", 100.0, ""), ("ov", 98.0, "amx")]
    far = [("ort", 100.0, ""), ("ov", 90.0, "amx")]
    score, isa = (lambda t: t[1]), (lambda t: t[2])
    assert pick(near, score, isa, amx=True) == (near[1], near[0])
    assert pick(near, score, isa, amx=False) == (near[0], None)
    assert pick(far, score, isa, amx=True) == (far[0], None)
    assert pick([], score, isa, amx=True) == (None, None)


def test_pick_asks_the_hardware_only_when_an_item_ran_amx(force_cpu, monkeypatch):
    near = [("ort", 100.0, ""), ("ov", 98.0, "amx")]
    force_cpu("xeon-amx")
    assert pick(near, lambda t: t[1], lambda t: t[2])[0][0] == "ov"
    force_cpu("xeon-amx", tiles=False)
    assert pick(near, lambda t: t[1], lambda t: t[2])[0][0] == "ort"
    monkeypatch.setattr(hardware, "amx_usable", lambda kind=None: pytest.fail("asked the hardware"))
    assert pick([("a", 1.0, ""), ("b", 2.0, "avx512")], lambda t: t[1], lambda t: t[2])[0][0] == "b"


@pytest.mark.parametrize("kind, tiles, want", [("xeon-amx", True, ["fp32", "bf16", "int8"]),
                                               ("xeon-amx", False, ["fp32", "int8"]),
                                               ("zen5-avx512-vnni-bf16", True, ["fp32", "int8"])])
def test_plan_tries_bf16_by_default_on_amx(force_cpu, kind, tiles, want):
    force_cpu(kind, tiles=tiles)
    assert default_precisions() == want


def _two_engines(ov_factor: float, ov_isa: str = "amx"):
    """measure(): "ort" at 1000 samples/s, "ov" at ``ov_factor`` of that on ``ov_isa`` kernels; p99 = batch ms."""
    def measure(c: Candidate, seconds: float) -> Measurement:
        rate = 1000.0 * (ov_factor if c.engine == "ov" else 1.0)
        return Measurement(throughput=rate, p50_ms=c.batch, p99_ms=c.batch, samples=10, seconds=seconds,
                           kernel_isa=ov_isa if c.engine == "ov" else "")
    return measure


@pytest.mark.parametrize("mode", ["exhaustive", "smart"])
@pytest.mark.parametrize("kind, tiles, ov_factor, ov_isa, want", [
    ("xeon-amx", True, 0.98, "amx", "ov"),  # within the margin: the AMX engine
    ("xeon-amx", True, 0.90, "amx", "ort"),  # beyond it: the measurement decides
    ("xeon-amx", False, 0.98, "amx", "ort"),  # tiles off: no preference
    ("zen5-avx512-vnni-bf16", True, 0.98, "amx", "ort"),  # no AMX here: no preference
    ("xeon-amx", True, 0.98, "avx512", "ort"),  # kernels read back without AMX: no preference
])
def test_planner_prefers_the_engine_on_amx_kernels(force_cpu, mode, kind, tiles, ov_factor, ov_isa, want):
    force_cpu(kind, tiles=tiles)
    grid = Grid.build(["ort", "ov"], ["int8"], [1], cores=1, supported=lambda e: ("int8",))
    result = plan(grid, _two_engines(ov_factor, ov_isa), budget_ms=5.0, mode=mode, progress=False)
    assert result.best[0].engine == want
    noted = [a for a in result.assumptions if "AMX" in a]
    assert bool(noted) is (want == "ov")


@pytest.mark.parametrize("amx, want", [(True, "openvino"), (False, "torch")])
def test_precision_rung_prefers_the_engine_on_amx_kernels(amx, want):
    from effstack.ladder import Budget, Ladder, Measured, Variant

    # bf16: torch 2 % faster than OpenVINO, whose kernels are read back as AMX; ONNX Runtime has no bf16
    rates = {("torch", "fp32"): 100.0, ("onnxruntime", "fp32"): 100.0,
             ("openvino", "bf16"): 196.0, ("torch", "bf16"): 200.0, ("onnxruntime", "bf16"): None}

    def measure(variant, config) -> Measured:
        rate = rates.get((config.engine, config.precision))
        if rate is None:
            return Measured(error=f"{config.engine} cannot run {config.precision}")
        if config.engine == "openvino" and config.precision == "fp32":
            return Measured(error="not in this test")
        return Measured(throughput=rate, p99_ms=1.0, accuracy=90.0,
                        kernel_isa="amx" if config.engine == "openvino" else "")

    ladder = Ladder(Variant("m"), Budget(5.0), measure, engines=("onnxruntime", "openvino"), precisions=("bf16",),
                    max_batch=1, cores=2, amx=amx)
    rung = {r.step: r for r in ladder.climb().rungs}["precision"]
    assert rung.status == "kept" and rung.config.engine == want and rung.config.precision == "bf16"
    assert ("amx_preferred" in rung.details) is amx
