"""Ray, kept optional and on this machine: the import check and a loopback-only local cluster.

Every Ray command calls :func:`require_ray` first, so a machine without the ``ray`` extra gets one line that
says how to install it instead of a traceback. :func:`local_ray` starts a fresh single-node cluster bound to
127.0.0.1 (``address="local"`` never joins a cluster named by ``RAY_ADDRESS``), without the dashboard and
with Ray's usage statistics off, so nothing leaves the machine.

>>> with local_ray(num_cpus=2):          # doctest: +SKIP
...     ...
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from ..errors import ConfigError, MissingDependencyError

__all__ = ["LOOPBACK", "RAY_ENV", "local_ray", "loopback_env", "require_ray"]

LOOPBACK = "127.0.0.1"
# set before ray is imported: no usage report to Ray's servers; this node's address is the loopback one
# Serve's proxy sends requests to replicas on its own node first: made for a proxy on every node, but effstack
# runs one proxy, on the head, so that preference would leave the other nodes' replicas idle below saturation.
# Ray starts its worker processes at niceness 15 (so that its own daemons stay responsive); effstack's replicas
# and actors *are* the serving compute: at 15 (engine threads at 19) they lost the CPU to the load, the driver
# and Ray's daemons, all at 0, and Ray Serve carried 0.12x the rate of effstack serve on a 2-core machine
# (benchmarks/ray_serving.py); workers run at the niceness of the process that starts the cluster instead
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0", "RAY_worker_niceness": "0"}


def require_ray(part: str = "", purpose: str = "") -> ModuleType:
    """Import ``ray`` (and ``ray.<part>``: ``serve`` or ``data``) or raise :class:`MissingDependencyError`.

    Raises:
        MissingDependencyError: Ray, or the part of it asked for, is not installed; the message names the
            ``ray`` extra.

    Example:
        >>> require_ray("serve", "effstack deploy ray")      # doctest: +SKIP
    """
    import importlib

    loopback_env()  # before the first import: Ray reads these into constants when it is imported
    name = f"ray.{part}" if part else "ray"
    try:
        importlib.import_module(name)
        return importlib.import_module("ray")
    except ImportError as exc:
        raise MissingDependencyError("ray[serve,data]", "ray", purpose or f"Ray {part or 'clusters'}") from exc


def loopback_env() -> None:
    """Set :data:`RAY_ENV` in this process (over any values given: effstack keeps Ray local); call it before
    ``import ray``.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray's own idea of this node's address the loopback one (it
    otherwise swaps 127.0.0.1 in an address for the machine's outward interface); Ray reads it at import.
    """
    os.environ.update(RAY_ENV)


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None, **init: Any) -> Iterator[ModuleType]:
    """A local Ray cluster on 127.0.0.1 for the ``with`` block; shut down after it unless one was running.

    Args:
        num_cpus: the CPUs the cluster may schedule (default: Ray's count of this machine's cores).
        init: more keyword arguments for ``ray.init`` (e.g. ``runtime_env``).

    Raises:
        MissingDependencyError: Ray is not installed.
    """
    if num_cpus is not None and (isinstance(num_cpus, bool) or num_cpus < 1):
        raise ConfigError(f"the Ray cluster needs at least 1 CPU, got {num_cpus}; fix --num-cpus")
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
                 log_to_driver=False, configure_logging=False, **init)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
