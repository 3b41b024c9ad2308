"""Running the app: in the foreground (``effstack serve``) or on a background thread (tests, benchmarks).

uvicorn runs on httptools (its protocol stamping each request's arrival, :func:`http_protocol`) and uvloop when
they are installed (the ``serve`` extra brings them); the access log is off, since one log line per request
costs as much as the rest of a null-engine request.

>>> with BackgroundServer(create_app(repo, ServerOptions(port=0))) as srv:   # doctest: +SKIP
...     print(srv.url)
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from ..errors import ConfigError, EngineError, MissingDependencyError

__all__ = ["BackgroundServer", "free_port", "http_protocol", "require_serve", "run_server"]


def require_serve() -> None:
    """Raise :class:`MissingDependencyError` naming the ``serve`` extra when its packages are missing."""
    from .._optional import is_installed

    for package in ("starlette", "uvicorn", "prometheus_client"):
        if not is_installed(package):
            raise MissingDependencyError(package, "serve", "effstack serve")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_PROTOCOL: Any = None


def http_protocol() -> Any:
    """uvicorn's HTTP protocol for the server: httptools' (what uvicorn picks when it is installed) stamping each
    request's arrival in its ASGI scope, or ``"auto"`` without httptools.

    The stamp (``scope[ARRIVAL_KEY]``, ``time.perf_counter_ns``) is taken when the parser meets the request's first
    bytes, before uvicorn creates the task that runs the app: under overload that task can wait its turn on a busy
    loop for milliseconds, and a refusal timed from the handler's start would not show it
    (``effstack_refusal_duration_seconds``). One clock read and one dict entry per request.
    """
    global _PROTOCOL
    if _PROTOCOL is None:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:  # no httptools: uvicorn's h11 protocol, and the handlers stamp arrivals themselves
            _PROTOCOL = "auto"
        else:
            from .metrics import ARRIVAL_KEY

            class ArrivalStampedProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
                def on_message_begin(self) -> None:
                    super().on_message_begin()
                    self.scope[ARRIVAL_KEY] = time.perf_counter_ns()  # type: ignore[literal-required]

            _PROTOCOL = ArrivalStampedProtocol
    return _PROTOCOL


def _config(app: Any, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=10, http=http_protocol())


def _server(app: Any, host: str, port: int, log_level: str, grpc: Any = None) -> Any:
    """A uvicorn server for ``app``; with ``grpc`` (a :class:`~effstack.serve.grpc_server.GrpcServer`), one that
    serves gRPC on the same event loop too."""
    import uvicorn

    if grpc is None:
        return uvicorn.Server(_config(app, host, port, log_level))
    from .grpc_server import uvicorn_with_grpc

    return uvicorn_with_grpc(_config(app, host, port, log_level), grpc)


def run_server(app: Any, host: str, port: int, log_level: str = "info", grpc: Any = None) -> None:
    """Serve ``app`` until interrupted (Ctrl-C drains the models and stops); with ``grpc``, gRPC as well.

    Raises:
        ConfigError: the address (or the gRPC one) cannot be bound.
    """
    server = _server(app, host, port, log_level, grpc)
    try:
        server.run()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from None
    if getattr(server, "error", None) is not None:
        raise server.error
    if not server.started and not server.should_exit:
        raise EngineError("the server stopped during start-up; see the log above")


class BackgroundServer:
    """The app on a daemon thread, bound to ``host`` on a free port; a context manager.

    Args:
        app: the ASGI app (its lifespan loads the models before :meth:`start` returns).
        host: the address (127.0.0.1).
        port: 0 picks a free port.
        start_timeout_s: how long to wait for the models to load.
        grpc: a :class:`~effstack.serve.grpc_server.GrpcServer` to serve on the same loop (None: HTTP only).

    Raises:
        EngineError: the server did not start in time or failed during start-up.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 120.0,
                 log_level: str = "warning", grpc: Any = None):
        self.host = host
        self.port = port or free_port(host)
        self.grpc = grpc
        self.server = _server(app, host, self.port, log_level, grpc)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # older uvicorn
        self.start_timeout_s = start_timeout_s
        self._thread = threading.Thread(target=self.server.run, name="effstack-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not getattr(self.server, "serving", self.server.started):  # with gRPC: both listen
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                if getattr(self.server, "error", None) is not None:
                    raise self.server.error
                raise EngineError(f"the server on {self.url} did not start within {self.start_timeout_s:.0f} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
