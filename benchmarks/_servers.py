"""Server processes for the serving benchmarks: start one on 127.0.0.1, wait until it is ready, read what it
reports, stop its whole process group; and the engine's own figures (batch-1 time, offline rate) to judge it by.

Shared by ``serving.py``, ``serving_stages.py``, ``serving_overload.py``, ``serving_soak.py`` and
``serving_loadgen.py``. Server logs go to one temporary folder per benchmark process (``LOGS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
LOGS = Path(tempfile.mkdtemp(prefix="effstack-serving-"))


def start(argv: list[str], ready_url: str, name: str, timeout_s: float = 600) -> subprocess.Popen:
    """Start a server process (output to a log file) and wait until ``ready_url`` answers 200."""
    with open(LOGS / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
        # a session of its own: LitServe forks workers, and stop() must end the whole group it started
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}; see {LOGS / (name + '.log')}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{name} was not ready within {timeout_s:.0f} s; see {LOGS / (name + '.log')}")


def stop(proc: subprocess.Popen) -> None:
    """End the server and every process it started (its own process group, created by :func:`start`)."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            os.killpg(proc.pid, 0)  # raises once the whole group is gone
            time.sleep(0.5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


def effstack_server(args: argparse.Namespace, port: int, *extra: str, engine: str | None = None,
                    precision: str | None = None, instances: int | None = None,
                    model: str | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "effstack", "serve", model or args.model, "--port", str(port), "--host", HOST,
            "--engine", engine or args.engine, "--precision", precision or args.precision,
            "--max-batch", str(args.max_batch), "--instances", str(instances or args.instances), *extra]
    return start(argv, f"http://{HOST}:{port}/v2/health/ready", f"effstack-{port}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def server_info(port: int, name: str) -> dict[str, Any]:
    """What the server reports of its model: its serving config, batch cap, measured p99 curve, layouts tried."""
    config = get_json(f"http://{HOST}:{port}/v2/models/{name}/config")
    return json.loads(config["parameters"]["effstack"]["string_value"])


def offline_throughput(args: argparse.Namespace, engine: str, precision: str, batch: int,
                       model_spec: str | None = None) -> float:
    from effstack.measure.scenarios import offline
    from effstack.engines import SessionOptions, get_engine
    from effstack.models import load_model

    model = load_model(model_spec or args.model)
    with get_engine(engine).load(model, SessionOptions(precision=precision, batch=batch)) as session:
        r = offline(session, model.input.example(batch), duration_s=args.duration, repeats=3)
    return r.throughput.median


def model_name(model: str) -> str:
    from effstack.serve.repository import resolve_target

    return next(iter(resolve_target(model, {})))


def batch1_ms(args: argparse.Namespace, model_spec: str) -> float:
    """Median batch-1 milliseconds of one session with every thread (the unit a latency budget is set in)."""
    from effstack.engines import SessionOptions, get_engine
    from effstack.measure.scenarios import single_stream
    from effstack.models import load_model

    model = load_model(model_spec)
    with get_engine(args.engine).load(model, SessionOptions(precision=args.precision)) as session:
        return single_stream(session, model.input.example(1), duration_s=3.0, repeats=3).latency.p50_ms
