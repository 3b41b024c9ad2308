"""DataSpec: a string that names a data set, parsed once.

Forms::

    synth:RECIPE?n=50000&seed=1&size=64&strength=1&workers=2&channels=3&preprocess=optdigits
    imagefolder:DIR?size=32&channels=3      (or just DIR: one sub-folder of images per class)
    sklearn:digits?split=test&size=8&channels=1
    photos:all?n=16&seed=0&size=224&split=eval&labels=group&reference=efficientnet_lite2

>>> parse_data_spec("synth:digits?n=100&seed=2")
DataSpec(kind='synth', target='digits', options={'n': 100, 'seed': 2})
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ..cli.common import parse_value
from ..errors import ConfigError

__all__ = ["DataSpec", "parse_data_spec", "KINDS"]

# kind -> the options it accepts
KINDS: dict[str, tuple[str, ...]] = {
    "synth": ("n", "seed", "size", "strength", "workers", "channels", "preprocess"),
    "imagefolder": ("size", "channels"),
    "sklearn": ("split", "size", "channels"),
    "photos": ("n", "seed", "size", "split", "labels", "reference", "min_confidence"),
}
_EXAMPLE_TARGET = {"synth": "digits", "imagefolder": "photos/", "sklearn": "digits", "photos": "all"}


@dataclass(frozen=True)
class DataSpec:
    """``kind`` (synth, imagefolder, sklearn, photos), ``target`` (recipe, folder or data set name), ``options``."""

    kind: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.kind}:{self.target}" + (f"?{query}" if query else "")


def parse_data_spec(text: str | os.PathLike[str] | DataSpec) -> DataSpec:
    """Parse ``text`` into a :class:`DataSpec`; a path without a known prefix is an image folder.

    Raises:
        ConfigError: an empty spec, an unknown option for its kind, or a malformed option.
    """
    if isinstance(text, DataSpec):
        return text
    text = os.fspath(text).strip()
    if not text:
        raise ConfigError("data spec must not be empty; give e.g. 'synth:digits?n=1000' or an image folder")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        kind, rest = "imagefolder", text  # a plain folder path (or a Windows drive path)
    target, _, query = rest.partition("?")
    if not target:
        raise ConfigError(f"data spec {text!r} names no {kind} target; e.g. '{kind}:{_EXAMPLE_TARGET[kind]}'")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"data spec options must look like ?key=value&key=value, got {query!r}") from None
    options = {k: parse_value(v) for k, v in pairs}
    unknown = sorted(set(options) - set(KINDS[kind]))
    if unknown:
        raise ConfigError(f"{kind} data does not take option(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(KINDS[kind])}")
    return DataSpec(kind, target, options)
