"""``effstack deploy ray BUNDLE`` as a user runs it (a child process that serves until Ctrl-C, then stops Ray), and
a bundle the replicas cannot load (valid hashes, broken model): the deploy fails in one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")

from effstack.cli.main import main
from effstack.serve.server import free_port

pytestmark = pytest.mark.timeout(180)


def test_deploy_ray_serves_until_interrupted(tiny_bundle, tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "effstack", "deploy", "ray", str(tiny_bundle), "--threads", "1", "--num-cpus", "2",
            "--port", str(port)]
    log = tmp_path / "deploy.log"  # a file, not a pipe: Ray's start-up logging must never block the child
    with open(log, "w") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        # ready = the command said so (the route may answer a moment before serve.run returns to it)
        while time.monotonic() < deadline and proc.poll() is None and "serving on" not in log.read_text():
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        meta = httpx.get(f"http://127.0.0.1:{port}/v2/models/tiny_mlp", timeout=5).json()
        assert meta["name"] == "tiny_mlp"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the command stops Serve and its cluster, then exits 0
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    out = log.read_text()
    assert proc.returncode == 0, out
    assert "1 replica(s) of 1 CPU(s) (autoscaling 1..1)" in out
    assert f"serving on http://127.0.0.1:{port}/v2 through Ray Serve" in out


def test_a_bundle_the_replicas_cannot_load_fails_the_deploy_in_one_line(tiny_bundle, tmp_path, capsys):
    import hashlib
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = hashlib.sha256(b"not an onnx model").hexdigest()  # passes the hash check
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main(["deploy", "ray", str(broken), "--threads", "1", "--num-cpus", "2", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("effstack: error: ") and "could not start" in err, err


def test_an_unknown_engine_is_refused_before_ray_starts(tiny_bundle, capsys):
    assert main(["deploy", "ray", str(tiny_bundle), "--engine", "onnxruntme"]) == 2
    assert "Did you mean: onnxruntime" in capsys.readouterr().err
