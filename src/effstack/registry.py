"""Lazy registries: a name maps to "module:attr", imported only when that entry is used.

Listing what exists never imports heavy optional packages; asking whether an entry is usable checks
its required packages with ``importlib.util.find_spec`` (no import).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._optional import is_installed
from .errors import UserError, suggest

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attr"
    requires: tuple[str, ...] = ()  # importable packages it needs
    summary: str = ""


@dataclass
class Registry(Generic[T]):
    """A table of named, lazily imported things (engines, recipes, ...)."""

    kind: str
    error: type[UserError] = UserError
    _entries: dict[str, Entry] = field(default_factory=dict)

    def register(self, name: str, target: str, requires: tuple[str, ...] = (), summary: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, target, tuple(requires), summary)

    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._entries)}."
                + suggest(name, self._entries)
            ) from None

    def missing(self, name: str) -> list[str]:
        """The required packages of ``name`` that are not installed."""
        return [p for p in self.entry(name).requires if not is_installed(p)]

    def is_available(self, name: str) -> bool:
        return not self.missing(name)

    def get(self, name: str) -> Any:
        """Import and return the registered object (a class or factory)."""
        module_name, _, attr = self.entry(name).target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)
