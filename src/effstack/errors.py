"""effstack's exception tree.

Every error a user can cause is an :class:`EffstackError`; its message is one line that says what is
wrong and what to do. Third-party errors are translated at the boundary (see :func:`translate`).

::

    EffstackError
     ├── UserError                 the user asked for something that cannot be done as asked
     │    ├── UnknownModelError    no model of that name (suggests close matches)
     │    ├── UnknownEngineError   no engine of that name
     │    ├── InputError           wrong input shape, dtype or value
     │    ├── ConfigError          an option is out of range or inconsistent
     │    └── PrecisionError       the engine cannot run that precision
     ├── MissingDependencyError    an optional package is not installed (names the pip extra)
     ├── ArtifactError             a model/weights/ONNX file is unreadable, corrupt or mismatched
     ├── EngineUnavailableError    the engine is installed but cannot run here (no GPU, ...)
     └── EngineError               an engine failed while building or running a session
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "EffstackError",
    "UserError",
    "UnknownModelError",
    "UnknownEngineError",
    "InputError",
    "ConfigError",
    "PrecisionError",
    "MissingDependencyError",
    "ArtifactError",
    "EngineUnavailableError",
    "EngineError",
    "suggest",
    "one_line",
]


class EffstackError(Exception):
    """Base class of every error effstack raises on purpose."""


class UserError(EffstackError, ValueError):
    """The request cannot be done as asked; the message says what to change."""


class UnknownModelError(UserError, LookupError):
    pass


class UnknownEngineError(UserError, LookupError):
    pass


class InputError(UserError):
    pass


class ConfigError(UserError):
    pass


class PrecisionError(UserError):
    pass


class MissingDependencyError(EffstackError, ImportError):
    """An optional package is missing; the message names the pip extra that brings it."""

    def __init__(self, package: str, extra: str, purpose: str = "", install: str | None = None):
        self.package = package
        self.extra = extra
        what = f" (needed for {purpose})" if purpose else ""
        install = install or f"pip install 'effstack[{extra}]'"
        super().__init__(f"{package} is not installed{what}; install it with: {install}")


class ArtifactError(EffstackError):
    pass


class EngineUnavailableError(EffstackError):
    pass


class EngineError(EffstackError):
    pass


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of ``name`` among ``choices``, or ''."""
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=n, cutoff=0.6)
    by_lower = {c.lower(): c for c in choices}
    close = [by_lower[c] for c in close]
    return f" Did you mean: {', '.join(close)}?" if close else ""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """Squash an exception into one readable line (for CLI output and error rows)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, EffstackError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
