"""The quantize command (one-line errors, nothing partial written) and the cross-runtime parity table."""

import json

import numpy as np
import pytest

from effstack.cli.main import main
from effstack.compress import QuantizeConfig, quantize
from effstack.compress.parity import format_parity, parity
from effstack.models import load_model
from effstack.testing.trained import digits_data

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

MODEL = "effstack.testing.trained:digits_cnn"


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    x, y = digits_data("test")
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=x, y=y)
    return path


def test_cli_accepts_and_writes_model_and_json(npz, tmp_path, capsys):
    out, js = tmp_path / "m.onnx", tmp_path / "r.json"
    rc = main(["quantize", MODEL, "--data", str(npz), "--only-method", "--speedup-min", "0",
               "--bench-seconds", "0.05", "--output", str(out), "--json", str(js), "--parity"])
    assert rc == 0, capsys.readouterr()
    assert out.is_file()
    doc = json.loads(js.read_text())
    assert doc["quantize"]["accepted"] and doc["quantize"]["method"] == "minmax"
    assert doc["parity"] and "SNR" in capsys.readouterr().out


def test_cli_rejection_writes_no_model(npz, tmp_path):
    out = tmp_path / "m.onnx"
    rc = main(["quantize", MODEL, "--data", str(npz), "--only-method", "--speedup-min", "1000",
               "--bench-seconds", "0.05", "--output", str(out)])
    assert rc == 3 and not out.exists()


@pytest.mark.parametrize("make, msg", [
    (lambda p: p.mkdir() or p, "is empty"),
    (lambda p: p / "missing.npz", "does not exist"),
    (lambda p: (np.savez(p.with_suffix(".npz"), y=np.zeros(3)), p.with_suffix(".npz"))[1], "no array named 'x'"),
    (lambda p: (np.savez(p.with_suffix(".npz"), x=np.zeros((4, 3, 8, 8), np.float32)), p.with_suffix(".npz"))[1],
     "must have shape"),
    (lambda p: (np.savez(p.with_suffix(".npz"), x=digits_data("test")[0][:8], y=np.full(8, 11)),
                p.with_suffix(".npz"))[1], "outside the model's 10 classes"),
])
def test_cli_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys, make, msg):
    data = make(tmp_path / "d")
    out = tmp_path / "out.onnx"
    rc = main(["quantize", MODEL, "--data", str(data), "--output", str(out), "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and "\n" not in err
    assert not out.exists() and not (tmp_path / "r.json").exists()


def test_parity_table():
    x, y = digits_data("test")
    model = load_model(MODEL)
    r = quantize(model, QuantizeConfig(try_methods=False, speedup_min=0, bench_seconds=0.05, bench_repeats=1),
                 (x, y))
    rows = parity(model, r.model_path, x[:200])
    pairs = {(row["a"], row["b"]) for row in rows}
    assert ("pytorch fp32", "onnxruntime int8") in pairs
    for row in rows:
        assert row["top1_agreement"] >= 90 and row["snr_db"] > 15  # a SNR floor, not allclose
    assert "top-1 agree" in format_parity(rows)
