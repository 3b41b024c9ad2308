"""Files written whole or not at all, and the cache folder.

Every writer in effstack goes through here: a temporary name next to the target, then one
:func:`os.replace`, so a reader (or a crash mid-write) never sees half a file or half a folder.

- :func:`atomic_file` yields a temporary path for code that writes a file itself (``torch.save``,
  an exporter); :func:`atomic_write_text` and :func:`atomic_write_json` write a string or a document.
- :func:`atomic_files` moves several files that belong together (OpenVINO's ``.xml`` + ``.bin``).
- :func:`atomic_dir` builds a whole folder and swaps it in; a previous folder there is put back if the
  swap fails.
- :func:`cache_dir` is the one cache root: ``$EFFSTACK_CACHE`` or ``~/.cache/effstack``.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> atomic_write_json(path, {"x": 1}).read_text()
'{\\n "x": 1\\n}\\n'
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import ArtifactError, ConfigError

__all__ = ["atomic_file", "atomic_files", "atomic_dir", "atomic_write_text", "atomic_write_json", "cache_dir",
           "fsync_dir"]

FILE_MODE, DIR_MODE = 0o644, 0o755  # mkstemp/mkdtemp make them private; what effstack writes is meant to be shared


def cache_dir(kind: str | None = None, override: str | os.PathLike[str] | None = None, create: bool = True) -> Path:
    """The cache folder (``$EFFSTACK_CACHE`` or ``~/.cache/effstack``), or its sub-folder ``kind``.

    Args:
        kind: sub-folder name (``"onnx"``, ``"openvino"``, ...); ignored when ``override`` is given.
        override: use exactly this folder instead of the default.
        create: make the folder if needed.

    Raises:
        ConfigError: the folder cannot be created (e.g. ``$EFFSTACK_CACHE`` points at a file).

    Example:
        >>> cache_dir("onnx", create=False).name
        'onnx'
    """
    if override is not None:
        folder = Path(override).expanduser()
    else:
        folder = Path(os.environ.get("EFFSTACK_CACHE") or Path.home() / ".cache" / "effstack").expanduser()
        folder = folder / kind if kind else folder
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create cache folder {str(folder)!r} ({exc.strerror}); "
                              "set EFFSTACK_CACHE to a writable folder") from None
    return folder


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str | None = None, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, else delete it.

    Args:
        suffix: the temporary file's suffix (default: ``path``'s, for writers that go by the extension).
        durable: fsync the file before the rename and the folder after it.

    Raises:
        OSError: as raised by the folder, the writer or the rename (callers name what failed).
    """
    final = Path(path).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix if suffix is None else suffix,
                                dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(final.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, durable: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`); returns the path.

    Raises:
        ArtifactError: the file cannot be written (the message names the path).

    Example:
        >>> import tempfile, pathlib
        >>> atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "hi").read_text()
        'hi'
    """
    final = Path(path).expanduser()
    try:
        with atomic_file(final, durable=durable) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ArtifactError(f"cannot write {str(final)!r}: {exc.strerror or exc}; check the directory") from None
    return final


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int | None = 1, durable: bool = False,
                      **dumps: Any) -> Path:
    """Write ``data`` as JSON (``json.dumps(data, indent=indent, **dumps)`` and a newline) atomically.

    Raises:
        ArtifactError: the file cannot be written (the message names the path).
    """
    return atomic_write_text(path, json.dumps(data, indent=indent, **dumps) + "\n", durable=durable)


@contextlib.contextmanager
def atomic_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield a temporary folder next to ``paths``; on success move each same-named file into place.

    For artifacts made of several files in one folder (OpenVINO's ``.xml`` + ``.bin``). The files are
    moved in the order given, so list last the one readers test for.
    """
    finals = [Path(p).expanduser() for p in paths]
    folder = finals[0].parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        yield tmp
        for final in finals:
            os.replace(tmp / final.name, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], durable: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success swap it in for ``path``, else delete it.

    A folder already at ``path`` is moved aside, put back if the swap fails, and deleted after it.

    Args:
        durable: fsync every file and the folder before the swap, and the parent after it.

    Raises:
        OSError: as raised by the parent folder, the writer or the renames.
    """
    final = Path(path).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        os.chmod(tmp, DIR_MODE)
        yield tmp
        if durable:
            for f in tmp.rglob("*"):
                if f.is_file():
                    _fsync_file(f)
            fsync_dir(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)  # left by a swap that crashed
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:
            if old is not None:
                os.replace(old, final)  # put the previous folder back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if durable:
        fsync_dir(final.parent)
