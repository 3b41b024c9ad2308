"""``effstack train | distill | prune``: files written, resume, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from effstack.cli.main import main  # noqa: E402


@pytest.fixture()
def npz(tmp_path):
    """Four blobs in 16 dimensions for effstack.testing:tiny_mlp (16 features, 4 classes)."""
    centers = np.random.default_rng(5).standard_normal((4, 16)) * 3
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 64)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=(centers[y] + rng.standard_normal((64, 16))).astype(np.float32), y=y)
    return path


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_weights_json_and_resumes(tmp_path, npz, capsys):
    ckpt, out_pt, out_json = tmp_path / "ckpt", tmp_path / "mlp.pt", tmp_path / "r.json"
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"epochs": 2, "lr": 0.05}))
    args = ["train", "effstack.testing:tiny_mlp", "--data", str(npz), "--val", str(npz), "--train-config", str(cfg),
            "--lr", "0.01", "--checkpoint-dir", str(ckpt), "--no-progress", "--output", str(out_pt),
            "--json", str(out_json)]
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    doc = json.loads(out_json.read_text())["train"]
    assert doc["config"]["lr"] == 0.01 and doc["config"]["epochs"] == 2  # flag > file > default
    assert out_pt.is_file() and (ckpt / "last.pt").is_file() and "val top-1" in out
    code, out, err = _run(capsys, *args, "--resume", "--epochs", "3")
    assert code == 0, err
    doc = json.loads(out_json.read_text())["train"]
    assert doc["start_epoch"] == 2 and len(doc["history"]) == 3
    code, out, err = _run(capsys, "train", "effstack.testing:tiny_mlp", "--weights", str(out_pt), "--data", str(npz),
                          "--epochs", "1", "--no-progress")
    assert code == 0, err


@pytest.mark.parametrize("extra, message", [
    (["--data", "missing.npz"], "does not exist"),
    (["--data", "{npz}", "--optimizer", "adam"], "optimizer must be one of adamw, sgd"),
    (["--data", "{npz}", "--resume"], "resume needs a checkpoint_dir"),
    (["--data", "{npz}", "--train-config", "nope.json"], "does not exist"),
])
def test_train_bad_input_is_one_line_exit_2(npz, capsys, extra, message):
    extra = [e.replace("{npz}", str(npz)) for e in extra]
    code, out, err = _run(capsys, "train", "effstack.testing:tiny_mlp", "--no-progress", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_train_labels_outside_classes(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((8, 16), np.float32), y=np.full(8, 9))
    code, out, err = _run(capsys, "train", "effstack.testing:tiny_mlp", "--data", str(path), "--no-progress")
    assert code == 2 and "label 9 is outside the model's 4 classes" in err


def test_distill_without_labels(tmp_path, npz, capsys):
    teacher = tmp_path / "teacher.pt"
    assert _run(capsys, "train", "effstack.testing:tiny_mlp", "--data", str(npz), "--epochs", "2", "--no-progress",
                "--output", str(teacher))[0] == 0
    code, out, err = _run(capsys, "distill", "--teacher", "effstack.testing:tiny_mlp", "--teacher-weights", str(teacher),
                          "--student", "effstack.testing:tiny_mlp", "--data", str(npz), "--no-labels", "--epochs", "1",
                          "--temperature", "2", "--no-progress", "--json", str(tmp_path / "d.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "d.json").read_text())["distill"]["temperature"] == 2.0
    code, out, err = _run(capsys, "distill", "--teacher", "effstack.testing:tiny_mlp", "--student",
                          "effstack.testing:tiny_mlp", "--data", str(npz), "--alpha", "2", "--no-progress")
    assert code == 2 and "alpha must be in [0, 1]" in err


def test_prune_cli_writes_smaller_onnx(tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    pytest.importorskip("onnx")
    data = tmp_path / "img.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((8, 3, 16, 16)).astype(np.float32), y=rng.integers(0, 10, 8))
    onnx_path = tmp_path / "pruned.onnx"
    code, out, err = _run(capsys, "prune", "effstack.testing:tiny_cnn", "--input-shape", "3,16,16", "--data", str(data),
                          "--epochs", "0", "--steps", "1", "--round-to", "4", "--onnx", str(onnx_path),
                          "--json", str(tmp_path / "p.json"))
    assert code == 0, err
    assert onnx_path.is_file() and json.loads((tmp_path / "p.json").read_text())["prune"]["flops_ratio"] <= 0.5
    code, out, err = _run(capsys, "prune", "effstack.testing:tiny_cnn", "--data", str(data), "--target", "2")
    assert code == 2 and "target_flops_ratio must be in (0, 1)" in err
