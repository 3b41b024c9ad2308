"""``effstack deploy ray BUNDLE``: the bundle on Ray Serve, each replica an ``effstack serve`` of one instance.

Each replica runs the very ASGI app ``effstack serve`` runs (:func:`effstack.serve.app.create_app`) as the
deployment's ingress: the same Open Inference Protocol routes (health, metadata, config, infer with JSON and
binary tensors), the same error bodies and status codes, the same ``/metrics``. So ``tritonclient`` and
``effstack loadtest`` work against Ray unchanged, and nothing of the protocol is written twice. The app's
lifespan loads the bundle inside the replica (verifying its hashes again, on whichever node it lands: on a
real multi-node cluster the bundle's absolute path must be readable on every node, e.g. shared storage),
builds the engine session, warms every batch size up and measures the replica's own latency curve.

Batching: effstack's own policy (:class:`~effstack.serve.batcher.BatchingPolicy` through
:class:`~effstack.serve.workers.Batcher`), not Ray's ``@serve.batch``. Why:

* the budget drives it: the batch cap, the wait for company and the admission limit come from the latency
  curve the replica measures on the node it runs on; ``@serve.batch`` takes a fixed ``max_batch_size`` and
  ``batch_wait_timeout_s`` that would have to be guessed on the driver, before any curve of that node exists;
* it counts samples, not requests (a request of 4 samples fills 4 slots), drops requests whose deadline
  passed instead of computing them, waits only when company is expected, and refuses overload early with
  503 + Retry-After; ``@serve.batch`` does none of these;
* online behaviour then matches ``effstack serve`` exactly, so the two can be compared side by side
  (``benchmarks/ray_serving.py``) and a difference is Ray's routing, not a different batcher.

Ray does what one process cannot: replicas across nodes, restarts, autoscaling. The plan's ``instances``
become replicas (each ``num_cpus`` = the plan's threads per instance, one session inside), autoscaled
between ``min_replicas`` (default 1) and the plan's instance count; Ray adds a replica once those running
hold more than a full batch (``max_batch`` requests) each on average. ``max_ongoing_requests`` lets a
replica hold as much as its own admission limit can take, so the replica's batcher, not Ray's router queue,
decides what waits; requests beyond that wait at most ``queue_capacity`` deep in Ray's router, then get 503.

Ray stays on loopback: the cluster is local on 127.0.0.1 (:func:`~effstack.deploy.cluster.local_ray`), and
Serve runs one HTTP proxy, on the head node, bound to 127.0.0.1.

>>> with RayServeApp.start("bundles/resnet50", port=8000) as app:     # doctest: +SKIP
...     print(app.url)
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .cluster import LOOPBACK, local_ray, require_ray

if TYPE_CHECKING:
    from ..serve.config import ServingConfig

__all__ = ["ReplicaPlan", "RayServeApp", "replica_plan", "replica_processes", "resolve_one", "serve_application"]

PURPOSE = "effstack deploy ray"
HEALTH_CHECK_PERIOD_S = 2.0  # how often Ray asks a replica whether it lives (its restart after a kill)
# Ray writes a log line per request in the proxy and again in the replica; effstack's own /metrics count and
# time every request already (per stage), so Ray's access log is off: two file writes less per request
ACCESS_LOG_OFF = {"enable_access_log": False}


@dataclass(frozen=True)
class ReplicaPlan:
    """How a serving config becomes Ray Serve replicas.

    config: one replica's serving config (one instance with the plan's threads per instance).
    num_cpus: CPUs Ray reserves for each replica (its compute threads).
    min_replicas / initial_replicas / max_replicas: the autoscaling bounds.
    max_ongoing_requests: requests Ray lets one replica hold at once (its own batcher queues them).
    target_ongoing_requests: the load per replica at which Ray adds one.
    max_queued_requests: requests that may wait in Ray's router when every replica is full (then 503).
    """

    config: ServingConfig
    num_cpus: int
    min_replicas: int
    initial_replicas: int
    max_replicas: int
    max_ongoing_requests: int
    target_ongoing_requests: float
    max_queued_requests: int

    def deployment_options(self) -> dict[str, Any]:
        """The keyword arguments of ``serve.deployment`` for this plan."""
        return {
            "ray_actor_options": {"num_cpus": self.num_cpus},
            "autoscaling_config": {"min_replicas": self.min_replicas, "initial_replicas": self.initial_replicas,
                                   "max_replicas": self.max_replicas,
                                   "target_ongoing_requests": self.target_ongoing_requests},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": HEALTH_CHECK_PERIOD_S,
            "max_constructor_retry_count": 3,  # a model that cannot load fails the deploy instead of looping
            "logging_config": ACCESS_LOG_OFF,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"replica_config": self.config.to_dict(), **self.deployment_options()}


def replica_plan(config: ServingConfig, min_replicas: int | None = None, max_replicas: int | None = None) -> ReplicaPlan:
    """Split a serving config into replicas: ``instances`` -> replicas, threads per instance -> ``num_cpus``.

    ``instances="auto"`` keeps one replica that picks its own layout at load, with all the threads.

    Raises:
        ConfigError: replica bounds below 1 or min above max.

    Example:
        >>> from effstack.serve.config import ServingConfig
        >>> p = replica_plan(ServingConfig("m.onnx", engine="null", instances=2, threads=4))
        >>> (p.num_cpus, p.min_replicas, p.max_replicas, p.config.instances, p.config.threads)
        (2, 1, 2, 1, 2)
    """
    from ..serve.config import AUTO

    if config.instances == AUTO:
        per_replica, threads, replicas = config, config.total_threads(), 1
    else:
        threads = config.threads_per_instance()
        per_replica, replicas = replace(config, instances=1, threads=threads), config.instance_count()
    low = 1 if min_replicas is None else min_replicas
    high = max(replicas, low) if max_replicas is None else max_replicas
    if low < 1 or high < low:
        raise ConfigError(f"replicas must satisfy 1 <= min <= max, got min {low} and max {high}; "
                          "fix --min-replicas/--max-replicas")
    # a replica may hold what its batcher admits plus a batch being computed; Ray's router holds the rest
    hold = config.queue_capacity + config.max_batch
    return ReplicaPlan(per_replica, threads, low, min(max(replicas, low), high), high, hold,
                       float(config.max_batch), config.queue_capacity)


def resolve_one(target: str | Path, overrides: dict[str, Any] | None = None,
                name: str | None = None) -> ServingConfig:
    """The one serving config of ``target`` (a bundle, a serving.json or a model spec), checked here.

    A bundle is verified (every file against its manifest hash) before anything is deployed, so a missing or
    edited bundle fails in one line on the driver, not in a replica's log.

    Raises:
        ArtifactError: a missing, unreadable or tampered bundle. ConfigError: several models, or bad settings.
    """
    from ..serve.repository import resolve_target

    path = Path(target).expanduser()
    if not path.exists() and ("/" in str(target) or path.suffix in (".json", ".onnx")):
        from ..errors import ArtifactError

        raise ArtifactError(f"{str(target)!r} does not exist; give a bundle folder written by "
                            "'effstack ladder ... --bundle DIR'")
    source = str(path.resolve()) if path.exists() else str(target)
    configs = resolve_target(source, dict(overrides or {}), name=name)
    if len(configs) != 1:
        raise ConfigError(f"{str(target)!r} holds {len(configs)} models; deploy one bundle at a time")
    (config,) = configs.values()
    if config.engine != "auto":  # a misspelt engine is refused here, not by every replica in turn
        from ..engines import get_engine

        get_engine(config.engine)
    return config


def _app_builder(config_dict: dict[str, Any], max_request_bytes: int) -> Callable[[], Any]:
    """A function that builds the replica's ASGI app where it runs (Ray pickles it, closure and all)."""

    def build() -> Any:
        from effstack.ladder.bundle import is_bundle, read_bundle
        from effstack.serve.app import ServerOptions, create_app
        from effstack.serve.config import ServingConfig
        from effstack.serve.repository import ModelRepository

        config = ServingConfig.from_dict(config_dict)
        folder = Path(config.model.source).parent if config.model is not None else None
        if folder is not None and is_bundle(folder):
            read_bundle(folder)  # this node's copy of the bundle, verified against its manifest before loading
        options = ServerOptions(host=LOOPBACK, port=0, max_request_bytes=max_request_bytes)
        return create_app(ModelRepository({config.name: config}), options)

    return build


def _supported(options: dict[str, Any], fn: Any) -> dict[str, Any]:
    """The options ``fn`` takes (older Ray releases lack some, e.g. ``max_constructor_retry_count``)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params}


def serve_application(config: ServingConfig, plan: ReplicaPlan, max_request_bytes: int = 64 * 1024 * 1024) -> Any:
    """The bound Ray Serve application for a resolved config and its :class:`ReplicaPlan`.

    Raises:
        MissingDependencyError: Ray Serve is not installed.
    """
    require_ray("serve", PURPOSE)
    from ray import serve

    ingress = serve.ingress(_app_builder(plan.config.to_dict(), max_request_bytes))()
    deployment = serve.deployment(ingress, name=f"effstack-{config.name}",
                                  **_supported(plan.deployment_options(), serve.deployment))
    return deployment.bind()


INGRESS = ("proxy", "direct")
DIRECT_PORTS = 64  # ports kept for the replicas' own HTTP servers in direct ingress, from the first one given


def direct_ingress_env(first_port: int) -> dict[str, str]:
    """The environment of a cluster whose ingress replicas serve HTTP themselves (Ray Serve's direct ingress):
    each replica listens on 127.0.0.1 at a port Ray allocates from ``first_port`` on, and a replica being
    stopped drains for a second (Ray's default waits half a minute, for a load balancer to notice)."""
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(first_port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(first_port + DIRECT_PORTS - 1),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


class RayServeApp:
    """A running Ray Serve deployment of one bundle on a local loopback cluster; a context manager.

    Build with :meth:`start`; :meth:`close` (or leaving the ``with`` block) deletes the app, stops Serve and
    the cluster it started. ``url`` is Serve's proxy (it routes to every replica, whichever lives);
    with ``ingress="direct"``, :meth:`direct_urls` are the replicas' own HTTP servers.
    """

    def __init__(self, config: ServingConfig, plan: ReplicaPlan, port: int, stack: contextlib.ExitStack,
                 ingress: str = "proxy", direct_port: int | None = None):
        self.config = config
        self.plan = plan
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.ingress = ingress
        self._direct_port = direct_port
        self._stack = stack

    def direct_urls(self) -> list[str]:
        """The URLs of the replicas' own HTTP servers (direct ingress; empty behind the proxy), in port order."""
        if self._direct_port is None:
            return []
        import psutil

        low, high = self._direct_port, self._direct_port + DIRECT_PORTS
        ports = set()
        for p in replica_processes():
            with contextlib.suppress(psutil.Error):
                ports |= {c.laddr.port for c in p.net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN and low <= c.laddr.port < high}
        return [f"http://{LOOPBACK}:{port}" for port in sorted(ports)]

    @classmethod
    def start(cls, target: str | Path, overrides: dict[str, Any] | None = None, *, name: str | None = None,
              port: int = 8000, min_replicas: int | None = None, max_replicas: int | None = None,
              num_cpus: int | None = None, max_request_bytes: int = 64 * 1024 * 1024, ingress: str = "proxy",
              direct_port: int = 30000) -> RayServeApp:
        """Resolve and verify ``target``, start a local cluster (``num_cpus``) and Serve on 127.0.0.1:``port``,
        and deploy; returns once every initial replica has loaded, warmed up and answers.

        ``ingress``: ``"proxy"`` (default): every request goes through Serve's HTTP proxy, which routes it to a
        replica (one URL for any number of replicas, across restarts). ``"direct"``: each replica also serves
        HTTP itself (Ray Serve's direct ingress, ports from ``direct_port`` on; :meth:`direct_urls`), so a
        request skips the proxy's hop: on a 2-core machine the proxy and the replica's side of it cost about
        11 ms of CPU per 600 KB request, several times what the model computes. A client (or a load balancer
        in front) then picks the replica, and a restarted replica may come back on another port.

        Raises:
            MissingDependencyError: Ray Serve is not installed.
            ArtifactError, ConfigError: a bad bundle or bad settings (before Ray starts).
            EngineError: the replicas could not load the model.
        """
        if ingress not in INGRESS:
            raise ConfigError(f"--ingress must be one of {', '.join(INGRESS)}, got {ingress!r}")
        require_ray("serve", PURPOSE)
        config = resolve_one(target, overrides, name)
        plan = replica_plan(config, min_replicas, max_replicas)
        stack = contextlib.ExitStack()
        try:
            if ingress == "direct":  # read by the cluster's processes as they start: set before the cluster
                import ray

                if ray.is_initialized():
                    raise ConfigError("direct ingress needs a Ray cluster of its own, and one is running in this "
                                      "process; stop it (ray.shutdown()) or use --ingress proxy")
                stack.enter_context(_environ(direct_ingress_env(direct_port)))
            stack.enter_context(local_ray(num_cpus))
            from ray import serve

            # one proxy, on the head: proxies on every node of a cluster simulated on one machine would all
            # bind 127.0.0.1:port, and the address users are given is the head's anyway
            serve.start(proxy_location="HeadOnly", http_options={"host": LOOPBACK, "port": port},
                        logging_config=ACCESS_LOG_OFF)
            stack.callback(serve.shutdown)
            _run(serve, serve_application(config, plan, max_request_bytes), config.name)
        except BaseException:
            stack.close()
            raise
        return cls(config, plan, port, stack, ingress, direct_port if ingress == "direct" else None)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> RayServeApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Any:
    """``values`` in this process's environment for the ``with`` block, the previous values restored after."""
    import os

    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(serve: Any, app: Any, name: str) -> None:
    """``serve.run`` with Ray's deploy failure turned into one line."""
    from ..errors import EngineError

    try:
        serve.run(app, name=name, route_prefix="/", blocking=False)
    except RuntimeError as exc:  # Ray's "Deploying application ... failed: <message, often a traceback>"
        import re

        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception): ", line)]
        reason = (raised[-1] if raised else lines[0])[:300]  # a traceback's last error line is its innermost
        raise EngineError(f"the Ray Serve replicas of {name!r} could not start ({reason}); "
                          "run 'effstack serve' on the bundle to see the error in full") from None


def replica_processes() -> list[Any]:
    """The Ray Serve replica processes under this process (a local cluster started here), as ``psutil.Process``.

    For fault drills: ``benchmarks/ray_serving.py`` and the tests SIGKILL one and time the recovery. Ray names
    a replica's worker process ``ray::ServeReplica:<app>:<deployment>``.
    """
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "ServeReplica" in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
