"""Serving fixtures: a gated stand-in session (tests decide when a batch finishes) and servers on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

WAIT_S = 10.0  # upper bound of every wait on a condition (never a timing assertion)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class GateSession:
    """Records each batch's size; blocks inside ``run`` while the gate is closed.

    Output: each sample's first feature times 2, so a test can check every request got its own rows.
    """

    engine = "gate"

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[int] = []
        self.running = 0
        self.fail = False
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self.batches.append(int(x.shape[0]))
            self.running += 1
        try:
            if not self.gate.wait(WAIT_S):
                raise RuntimeError("the test never opened the gate")
            if self.fail:
                raise RuntimeError("engine exploded")
            return (x.reshape(x.shape[0], -1)[:, :1] * 2).astype(np.float32)
        finally:
            with self._lock:
                self.running -= 1

    def settings(self) -> dict:
        return {"threads": 1}

    def close(self) -> None:
        self.gate.set()


@pytest.fixture(scope="session")
def tiny_mlp_model():
    from effstack.models import load_model

    return load_model("effstack.testing:tiny_mlp")


def gated_runner(model, name: str = "gated", sessions: int = 1, **settings):
    """A ModelRunner over GateSessions (warm-up batches are forgotten)."""
    from effstack.serve.config import ServingConfig
    from effstack.serve.repository import ModelRunner

    # inline_below_ms=0: a gate blocks, and it must block an instance thread, never the event loop
    config = ServingConfig(model="effstack.testing:tiny_mlp", name=name, engine="null", instances=sessions,
                           inline_below_ms=0, **settings)
    gates = [GateSession() for _ in range(sessions)]
    runner = ModelRunner.build(config, name, sessions=gates, model=model)
    for g in gates:
        g.batches.clear()
    return runner, gates


@pytest.fixture
def server_factory():
    """Start servers on 127.0.0.1 (free ports); all are stopped at the end of the test."""
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    started = []

    def start(configs=None, runners=None, **options):
        repo = ModelRepository(configs or {}, runners=runners)
        srv = BackgroundServer(create_app(repo, ServerOptions(**options))).start()
        srv.repository = repo
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
