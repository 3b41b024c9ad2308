"""The server's own errors and how each becomes an HTTP answer (``{"error": "one line"}``).

::

    EffstackError
     ├── QueueFull        overload: 503 with Retry-After, answered before the body is read
     ├── NotAccepting     the model is unloading: 503
     ├── ModelNotReady    the model is loading: 503
     ├── RequestTimeout   the request's deadline passed while it waited: 504
     └── UserError
          ├── InputError
          │    ├── ProtocolError     a malformed request: 400
          │    └── PayloadTooLarge   413
          └── Unauthorized           401

Other effstack errors map by kind (UnknownModelError 404, UserError 400); anything else is a 500.

>>> error_response_parts(QueueFull("busy", retry_after_s=2.2))[:2]
(503, {'Retry-After': '3'})
"""

from __future__ import annotations

import json
import math

from ..errors import (
    ArtifactError,
    EffstackError,
    InputError,
    MissingDependencyError,
    UnknownModelError,
    UserError,
    one_line,
)

__all__ = ["ModelNotReady", "NotAccepting", "PayloadTooLarge", "ProtocolError", "QueueFull", "RequestTimeout",
           "Unauthorized", "error_response_parts"]


class QueueFull(EffstackError):
    """The bounded queue is full: answer 503 with ``Retry-After: retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeout(EffstackError):
    """The request's deadline passed before it was computed (answer 504)."""


class NotAccepting(EffstackError):
    """The model is unloading and takes no new requests (answer 503)."""


class ProtocolError(InputError):
    """A malformed request (answer 400)."""


class PayloadTooLarge(InputError):
    """The body is larger than the server accepts (answer 413)."""


class Unauthorized(UserError):
    """Missing or wrong bearer token (answer 401)."""


class ModelNotReady(EffstackError):
    """The model is loading (answer 503 with Retry-After)."""


_STATUS: list[tuple[type[BaseException], int]] = [
    (PayloadTooLarge, 413), (Unauthorized, 401), (UnknownModelError, 404), (QueueFull, 503), (NotAccepting, 503),
    (ModelNotReady, 503), (RequestTimeout, 504), (UserError, 400), (MissingDependencyError, 500),
    (ArtifactError, 500),
]


def error_response_parts(exc: BaseException) -> tuple[int, dict[str, str], bytes]:
    """HTTP status, extra headers and the ``{"error": "..."}`` body for an exception.

    Client mistakes are 4xx, overload and loading 503 with Retry-After, timeouts 504, the rest 500.

    Example:
        >>> error_response_parts(QueueFull("busy", retry_after_s=2.2))[:2]
        (503, {'Retry-After': '3'})
    """
    status = next((s for cls, s in _STATUS if isinstance(exc, cls)), 500)
    headers: dict[str, str] = {}
    if status == 503:
        headers["Retry-After"] = str(max(1, math.ceil(getattr(exc, "retry_after_s", 1.0))))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    message = one_line(exc, 1000) if isinstance(exc, EffstackError) else f"internal error: {one_line(exc, 300)}"
    return status, headers, json.dumps({"error": message}).encode()
