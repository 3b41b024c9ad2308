"""The on-disk artifact cache shared by the exporters and the engines that build files.

Layout: ``<root>/<kind>/<name>-<key>.<ext>`` where ``<root>`` is ``$EFFSTACK_CACHE`` or
``~/.cache/effstack`` and ``<kind>`` is ``onnx``, ``openvino``, ``onnxruntime`` (quantized models) or
``tensorrt``. Keys are content hashes, so a stale entry is never reused: a changed model gets a new name.

The folder comes from :func:`effstack._files.cache_dir`. Every file is written with
:func:`effstack._files.atomic_file` (a temporary name in the same folder, then :func:`os.replace`), so a
reader never sees a half-written artifact (even if two processes build the same one at once: the last
rename wins and both files are identical).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np

__all__ = ["safe_name", "hash_arrays", "hash_text"]


def safe_name(name: str) -> str:
    """A file-name-safe version of a model name (``"a/b c"`` -> ``"a_b_c"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def hash_arrays(arrays: Iterable[np.ndarray]) -> str:
    """A short content hash of a sequence of arrays (shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def hash_text(*parts: object) -> str:
    """A short hash of the ``repr`` of some settings."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
