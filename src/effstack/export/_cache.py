"""The on-disk artifact cache shared by the exporters and the engines that build files.

Layout: ``<root>/<kind>/<name>-<key>.<ext>`` where ``<root>`` is ``$EFFSTACK_CACHE`` or
``~/.cache/effstack`` and ``<kind>`` is ``onnx``, ``openvino``, ``onnxruntime`` (quantized models) or
``tensorrt``. Keys are content hashes, so a stale entry is never reused: a changed model gets a new name.

Every file is written to a temporary name in the same folder and moved into place with
:func:`os.replace`, so a reader never sees a half-written artifact (even if two processes build the
same one at once: the last rename wins and both files are identical).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["cache_dir", "atomic_file", "atomic_dir", "safe_name", "hash_arrays", "hash_text"]


def cache_dir(kind: str, override: Path | str | None = None) -> Path:
    """The folder for artifacts of ``kind``, created if needed.

    Args:
        kind: sub-folder name (``"onnx"``, ``"openvino"``, ...); ignored when ``override`` is given.
        override: use exactly this folder instead of the default.

    Raises:
        ConfigError: the folder cannot be created (e.g. ``$EFFSTACK_CACHE`` points at a file).
    """
    if override is not None:
        folder = Path(override).expanduser()
    else:
        root = os.environ.get("EFFSTACK_CACHE") or str(Path.home() / ".cache" / "effstack")
        folder = Path(root).expanduser() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create cache folder {str(folder)!r} ({exc.strerror}); set EFFSTACK_CACHE to a writable folder"
        ) from None
    return folder


def safe_name(name: str) -> str:
    """A file-name-safe version of a model name (``"a/b c"`` -> ``"a_b_c"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


@contextlib.contextmanager
def atomic_file(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success move it onto ``final``, else delete it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=suffix or final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes it private; a cache is meant to be read by others too
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final_files: Iterable[Path]) -> Iterator[Path]:
    """Yield a temporary folder next to the files; on success move each same-named file into place.

    For artifacts made of several files (OpenVINO's ``.xml`` + ``.bin``). The ``.bin`` files are moved
    before the ``.xml`` (list the ``.xml`` last), because readers test for the ``.xml``.
    """
    finals = list(final_files)
    folder = finals[0].parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        yield tmp
        for final in finals:
            os.replace(tmp / final.name, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
