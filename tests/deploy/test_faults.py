"""A replica SIGKILLed under load: Ray restarts it, every request the client retries is answered, and the
service answers again within 30 s."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")

from effstack.deploy.ray_serve import RayServeApp, replica_processes
from effstack.serve.server import free_port

pytestmark = pytest.mark.timeout(240)

BODY = b'{"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [' + b",".join(
    [b"0.5"] * 16) + b"]}]}"


def _send_with_retries(url: str, n: int, answered: list[float], failures: list[float]) -> None:
    """Send ``n`` requests one after another, retrying each until it is answered 200 (a client that retries)."""
    with httpx.Client(timeout=5.0) as client:
        for _ in range(n):
            while True:
                try:
                    if client.post(url, content=BODY).status_code == 200:
                        answered.append(time.monotonic())
                        break
                except httpx.HTTPError:
                    pass
                failures.append(time.monotonic())
                time.sleep(0.05)


def test_a_killed_replica_is_restarted_and_no_retried_request_is_lost(tiny_bundle):
    with RayServeApp.start(tiny_bundle, {"threads": 1}, port=free_port(), num_cpus=2) as app:
        (victim,) = replica_processes()
        answered: list[float] = []
        failures: list[float] = []
        n = 300
        client = threading.Thread(target=_send_with_retries,
                                  args=(f"{app.url}/v2/models/tiny_mlp/infer", n, answered, failures))
        client.start()
        while len(answered) < 20:
            time.sleep(0.01)
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        client.join(timeout=120)
        assert not client.is_alive(), "the client never got all its answers"
        assert len(answered) == n  # every request answered, after retries where needed
        after = [t for t in answered if t > killed_at]
        assert after and after[0] - killed_at < 30.0, "the service did not answer within 30 s of the kill"
        (replacement,) = replica_processes()
        assert replacement.pid != victim.pid
