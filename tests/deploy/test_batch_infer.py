"""``effstack batch-infer``: Ray Data over an actor pool on a local 2-CPU cluster; outputs in data-set order,
written whole, checked against the torch model; bad data and foreign output folders are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray.data")
pytest.importorskip("onnxruntime")

from effstack.cli.main import main
from effstack.deploy.batch import batch_infer
from effstack.deploy.cluster import local_ray
from effstack.errors import ConfigError, InputError

pytestmark = pytest.mark.timeout(180)

DATA = "synth:digits?n=24&size=32&seed=3&workers=1"


@pytest.fixture(scope="module")
def cluster():
    """One loopback cluster for the module; batch_infer uses it instead of starting its own."""
    with local_ray(num_cpus=2) as ray:
        yield ray


@pytest.fixture(scope="module")
def reference():
    import torch

    from effstack.data import as_arrays, resolve_data
    from effstack.models import load_model

    x, y = as_arrays(resolve_data(DATA))
    with torch.inference_mode():
        return load_model("effstack.testing:tiny_cnn").module(torch.from_numpy(x)).numpy(), y


def test_the_cluster_is_on_loopback(cluster):
    nodes = cluster.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes), nodes
    assert cluster.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_npy_predictions_are_in_data_set_order_from_two_actors(cluster, cnn_bundle, reference, tmp_path):
    r = batch_infer(cnn_bundle, DATA, tmp_path / "out", overrides={"threads": 2}, actors=2, batch_size=5)
    assert (r.rows, r.plan.actors, r.plan.num_cpus, r.plan.batch_size) == (24, 2, 1, 5)
    y = np.load(tmp_path / "out" / "predictions.npy")
    np.testing.assert_allclose(y, reference[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "labels.npy"), reference[1])
    summary = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert summary["rows"] == 24 and summary["plan"]["actors"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["batch.json", "labels.npy", "predictions.npy"]


def test_parquet_output_through_the_cli_replaces_an_earlier_output(cluster, cnn_bundle, reference, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    argv = ["batch-infer", str(cnn_bundle), "--data", DATA, "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    assert main([*argv, "--format", "parquet"]) == 0
    assert "24 samples" in capsys.readouterr().out
    assert not (out / "predictions.npy").exists()  # the folder was swapped whole
    table = pq.read_table(out / "predictions.parquet").to_pydict()
    assert table["index"] == list(range(24))
    np.testing.assert_allclose(np.array(table["output"]), reference[0], rtol=1e-4, atol=1e-5)


def test_data_of_the_wrong_shape_and_foreign_folders_are_refused(cluster, cnn_bundle, tmp_path):
    with pytest.raises(InputError, match=r"shape \[3, 16, 16\] but the bundle's model takes \[3, 32, 32\]"):
        batch_infer(cnn_bundle, "synth:digits?n=4&size=16&workers=1", tmp_path / "a")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an 'effstack batch-infer' output"):
        batch_infer(cnn_bundle, DATA, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="--format"):
        batch_infer(cnn_bundle, DATA, tmp_path / "b", fmt="csv")
