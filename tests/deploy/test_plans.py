"""Plans, manifests and errors that need no Ray cluster: replica and actor plans, the KServe manifest, and the
one-line errors for a missing Ray, a missing bundle and a tampered bundle."""

from __future__ import annotations

import json
import sys

import pytest

from effstack.cli.main import main
from effstack.deploy.batch import batch_plan
from effstack.deploy.kserve import API_VERSION, kserve_manifest
from effstack.deploy.ray_serve import replica_plan
from effstack.errors import ConfigError
from effstack.serve.config import ServingConfig


def test_replica_plan_turns_instances_into_replicas_and_threads_into_cpus():
    plan = replica_plan(ServingConfig("m.onnx", engine="null", instances=3, threads=6, max_batch=8))
    assert (plan.num_cpus, plan.min_replicas, plan.initial_replicas, plan.max_replicas) == (2, 1, 3, 3)
    assert (plan.config.instances, plan.config.threads) == (1, 2)
    opts = plan.deployment_options()
    assert opts["ray_actor_options"] == {"num_cpus": 2}
    assert opts["autoscaling_config"]["max_replicas"] == 3
    assert opts["max_ongoing_requests"] == 256 + 8  # the replica's own queue decides what waits


def test_replica_bounds_are_flags_over_the_plan_and_checked():
    cfg = ServingConfig("m.onnx", engine="null", instances=2, threads=2)
    plan = replica_plan(cfg, min_replicas=2, max_replicas=5)
    assert (plan.min_replicas, plan.initial_replicas, plan.max_replicas) == (2, 2, 5)
    with pytest.raises(ConfigError, match="min <= max"):
        replica_plan(cfg, min_replicas=3, max_replicas=2)


def test_auto_instances_keep_one_replica_that_picks_its_layout():
    plan = replica_plan(ServingConfig("m.onnx", engine="null", instances="auto", threads=4))
    assert (plan.num_cpus, plan.max_replicas, plan.config.instances) == (4, 1, "auto")


def test_batch_plan_sizes_the_actor_pool_from_the_plan():
    plan = batch_plan(ServingConfig("m.onnx", engine="null", instances=2, threads=4, max_batch=16,
                                    latency_budget_ms=20.0))
    assert (plan.actors, plan.num_cpus, plan.batch_size) == (2, 2, 16)
    assert plan.config.latency_budget_ms is None  # offline: no budget to batch for
    assert batch_plan(plan.config, actors=3, batch_size=5).batch_size == 5
    with pytest.raises(ConfigError, match="--actors"):
        batch_plan(plan.config, actors=0)


def test_kserve_manifest_is_a_v2_custom_predictor_running_effstack_serve(tiny_bundle):
    yaml = pytest.importorskip("yaml")
    doc = kserve_manifest(tiny_bundle, image="registry.example/effstack:1", storage_uri="s3://b/tiny_mlp")
    doc = yaml.safe_load(yaml.safe_dump(doc))  # what kubectl would read
    assert doc["apiVersion"] == API_VERSION == "serving.kserve.io/v1beta1"
    assert doc["kind"] == "InferenceService"
    assert doc["metadata"]["name"] == "tiny-mlp"
    assert doc["metadata"]["annotations"]["effstack.io/protocol-version"] == "v2"
    predictor = doc["spec"]["predictor"]
    assert predictor["minReplicas"] == 1 and predictor["maxReplicas"] == 1
    (container,) = predictor["containers"]
    assert container["image"] == "registry.example/effstack:1"
    assert container["command"][:3] == ["effstack", "serve", "/mnt/models"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    threads = container["command"][container["command"].index("--threads") + 1]
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"] == threads
    assert {"name": "STORAGE_URI", "value": "s3://b/tiny_mlp"} in container["env"]


def test_deploy_kserve_cli_prints_yaml_that_parses(tiny_bundle, capsys, tmp_path):
    yaml = pytest.importorskip("yaml")
    assert main(["deploy", "kserve", str(tiny_bundle)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["kind"] == "InferenceService"
    out = tmp_path / "isvc.yaml"
    assert main(["deploy", "kserve", str(tiny_bundle), "--out", str(out), "--name", "Tiny_1"]) == 0
    assert yaml.safe_load(out.read_text())["metadata"]["name"] == "tiny-1"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_a_missing_or_tampered_bundle_is_one_line(tiny_bundle, tmp_path, capsys):
    assert main(["deploy", "kserve", str(tmp_path / "nope")]) == 2
    assert "is not an effstack bundle" in _one_line_error(capsys)
    assert main(["deploy", "ray", str(tmp_path / "nope"), "--print-plan"]) == 2
    assert "does not exist" in _one_line_error(capsys)
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    (bad / "model.onnx").write_bytes(b"not a model")
    assert main(["deploy", "ray", str(bad), "--print-plan"]) == 2
    assert "does not match its manifest hash" in _one_line_error(capsys)


def test_print_plan_needs_no_ray(tiny_bundle, capsys):
    assert main(["deploy", "ray", str(tiny_bundle), "--threads", "2", "--print-plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["ray_actor_options"] == {"num_cpus": 2}


@pytest.mark.parametrize("argv", [["deploy", "ray", "{b}"],
                                  ["batch-infer", "{b}", "--data", "synth:digits", "--out", "{o}"],
                                  ["index", "build", "{b}", "--images", "{o}", "--out", "{o}", "--ray"]],
                         ids=["deploy-ray", "batch-infer", "index-build-ray"])
def test_without_ray_every_ray_command_says_how_to_install_it(argv, tiny_bundle, tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")] + ["ray", "ray.serve", "ray.data"]:
        monkeypatch.setitem(sys.modules, name, None)  # import ray now fails as if it were not installed
    args = [a.format(b=tiny_bundle, o=tmp_path / "out") for a in argv]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "pip install 'effstack[ray]'" in err, err
    assert not (tmp_path / "out").exists()
