"""Calibration streams the float pass in chunks: bounded activation memory, exact min/max, one float run."""

import contextlib
import io

import numpy as np
import pytest

from effstack.compress.calibrate import Calibration
from effstack.models import load_model
from effstack.testing.trained import digits_data

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def x():
    return digits_data("test")[0][:64]


@pytest.fixture(scope="module")
def plain():
    return load_model("effstack.testing.trained:digits_cnn")


@pytest.fixture
def chunks(monkeypatch):
    """Every chunk the float pass hands to the statistics, as ``{tensor: array}`` copies."""
    seen: list[dict[str, np.ndarray]] = []
    fold = Calibration._accumulate

    def record(stats, chunk):
        seen.append({n: np.array(a, copy=True) for n, a in chunk.items()})
        fold(stats, chunk)

    monkeypatch.setattr(Calibration, "_accumulate", staticmethod(record))
    return seen


def _ranges(path):
    from onnxruntime.quantization.calibrate import load_tensors_data

    return {n: tuple(float(v) for v in d.range_value) for n, d in load_tensors_data(path).data.items()}


def test_streamed_calibration_holds_one_chunk_and_keeps_exact_minmax(plain, x, chunks):
    whole = Calibration(plain, x)  # the default budget holds this small model's 64 samples in one chunk
    whole.ranges("minmax")
    assert whole.chunk_size == len(x) and len(chunks) == 1
    acts = chunks.pop()
    per_sample = sum(a[:1].nbytes for a in acts.values())

    streamed = Calibration(plain, x, chunk_bytes=8 * per_sample)
    minmax = _ranges(streamed.ranges("minmax"))
    assert streamed.chunk_size == 8 and streamed.float_runs == 1
    assert [len(next(iter(c.values()))) for c in chunks] == [8] * 8  # never more than one chunk at a time
    for n, a in acts.items():  # min/max over all samples, to the bit
        assert minmax[n] == (float(a.min()), float(a.max())), n
    # the other methods come from the same single pass, and match the one-chunk result
    entropy, percentile = (_ranges(streamed.ranges(m)) for m in ("entropy", "percentile"))
    assert streamed.float_runs == 1 and len(chunks) == 8
    assert entropy == _ranges(whole.ranges("entropy")) == minmax  # ONNX Runtime's defaults: one KL candidate
    for n, (lo, hi) in _ranges(whole.ranges("percentile")).items():  # within a bin of 2048
        span = max(abs(lo), abs(hi))
        assert percentile[n] == pytest.approx((lo, hi), abs=2 * span / 2048), n


def test_one_chunk_histograms_match_onnxruntime_single_shot(plain, x, chunks):
    from onnxruntime.quantization.calibrate import HistogramCollector

    from effstack.compress.calibrate import _HISTOGRAM_OPTIONS

    cal = Calibration(plain, x)
    cal.ranges("minmax")
    acts = chunks.pop()
    for m in ("entropy", "percentile"):  # what the keep-every-activation code computed
        ref = HistogramCollector(method=m, scenario="same", **_HISTOGRAM_OPTIONS[m])
        with contextlib.redirect_stdout(io.StringIO()):
            ref.collect({n: [a] for n, a in acts.items()})
            want = ref.compute_collection_result()
        got = _ranges(cal.ranges(m))
        assert {n: (float(v[0]), float(v[1])) for n, v in want.items()} == got, m
