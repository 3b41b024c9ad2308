"""Writing a data set (image folder + labels file + preview), and the ``effstack synth`` command."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from effstack.cli.main import main
from effstack.data import as_arrays, resolve_data
from effstack.errors import ArtifactError, ConfigError
from effstack.synth import SynthConfig, generate, write_dataset
from effstack.synth import writer


def test_writes_image_folder_labels_and_preview(tmp_path):
    batch = generate(SynthConfig("shapes", n=10, seed=1, size=24, workers=1))
    out = write_dataset(batch, tmp_path / "ds")
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and rows[3]["class"] == "cylinder" and len(rows[3]["bbox"]) == 4
    assert all((out / r["file"]).is_file() for r in rows)
    assert (out / "preview.png").is_file()
    assert json.loads((out / "meta.json").read_text())["config"]["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folders left behind
    ds = resolve_data(str(out))  # the folder reads back as an image folder, losslessly
    assert ds.class_names == batch.classes and len(ds) == 10
    by_index = {r["index"]: k for k, r in enumerate(ds.labels)}
    x, y = as_arrays(ds)
    k = by_index[3]
    assert y[k] == 3 and np.allclose((x[k].transpose(1, 2, 0) * 0.5 + 0.5) * 255, batch.images[3], atol=0.01)


def test_existing_folder_needs_overwrite(tmp_path):
    batch = generate(SynthConfig("digits", n=3, workers=1))
    write_dataset(batch, tmp_path / "ds")
    with pytest.raises(ConfigError, match="is not empty; choose a new folder or pass overwrite"):
        write_dataset(batch, tmp_path / "ds")
    write_dataset(generate(SynthConfig("digits", n=5, workers=1)), tmp_path / "ds", overwrite=True)
    assert len((tmp_path / "ds" / "labels.jsonl").read_text().splitlines()) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_unwritable_output_folder_is_a_clear_error(tmp_path, monkeypatch):
    batch = generate(SynthConfig("digits", n=2, workers=1))
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        write_dataset(batch, blocker)
    with pytest.raises(ConfigError, match=r"cannot be created: .*file.txt' is a file"):
        write_dataset(batch, blocker / "sub")
    monkeypatch.setattr(writer.os, "access", lambda path, mode: False)  # as a non-root user without rights
    with pytest.raises(ArtifactError, match="is not writable"):
        write_dataset(batch, tmp_path / "new")


def test_cli_writes_a_data_set(tmp_path, capsys):
    assert main(["synth", "digits", "--n", "12", "--seed", "4", "--out", str(tmp_path / "d"), "--size", "16"]) == 0
    assert "wrote 12 digits images" in capsys.readouterr().out
    assert len((tmp_path / "d" / "labels.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize("argv, message", [
    (["synth", "digitz", "--n", "5"], "unknown recipe 'digitz'"),
    (["synth", "digits", "--n", "0"], "n must be an integer >= 1, got 0"),
    (["synth", "digits", "--n", "-2"], "n must be an integer >= 1, got -2"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_unwritable_output_fails_before_rendering(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["synth", "shapes", "--n", "100000", "--out", os.fspath(tmp_path / "f" / "o")]) == 2
    assert "is a file" in capsys.readouterr().err
