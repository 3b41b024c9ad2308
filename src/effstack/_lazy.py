"""Lazy public names for a package: each is imported from its module on first use.

Keeps ``import effstack`` (and its subpackages) light: nothing heavy is imported until a name that needs it
is touched. A public name must not also be a submodule's name, or importing that submodule would replace it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        table: public name -> module holding it; a module name without a dot is relative to ``package``.

    Example:
        >>> __getattr__, __dir__ = lazy_exports(__name__, {"bench": "runner"})  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(target if "." in target else f"{package}.{target}")
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)  # cache: later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__
