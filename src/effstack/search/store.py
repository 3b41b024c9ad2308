"""An index folder on disk: a manifest, one immutable snapshot, and a write-ahead log of later changes.

::

    INDEX/
      manifest.json       format, generation G, model (fingerprint, spec, layer, dim), kind, tuning, count
      gen-00000G/         the snapshot of generation G, never modified once in place
        vectors.npy       float32 (rows, dim), L2-normalised
        entries.json      ids and paths by row, and the rows removed since the last compaction
        index.faiss       the FAISS index (approximate kinds only; exact ones rebuild from vectors.npy)
      wal-00000G.log      changes acknowledged after snapshot G, one framed record per batch
      .lock               held (flock) by the one process that may write

A WAL record is ``b"EIW1" | u32 length | u32 crc32 | payload`` and is fsynced before its batch is
acknowledged; a record cut short by a crash (the last one, never acknowledged) is dropped on open, while
a bad checksum before the end of the log is corruption and an error. A checkpoint writes snapshot G+1 into
a temporary folder, renames it into place, then replaces the manifest atomically: a reader sees G or G+1,
never a mixture.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_dir, atomic_write_json, fsync_dir
from ..errors import ArtifactError, ConfigError

__all__ = ["FORMAT", "IndexLock", "Record", "Snapshot", "fsync_dir", "read_manifest", "read_snapshot", "read_wal",
           "write_manifest", "write_snapshot", "WalWriter"]

FORMAT = "effstack.index"
VERSION = 1
MAGIC = b"EIW1"
_HEAD = struct.Struct("<4sII")


def _corrupt(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"index {str(path)!r} is corrupt: {what}; restore it from a copy or rebuild it with "
                         "'effstack index build'")


def gen_dir(root: Path, generation: int) -> Path:
    return root / f"gen-{generation:06d}"


def wal_path(root: Path, generation: int) -> Path:
    return root / f"wal-{generation:06d}.log"


# --- manifest ---------------------------------------------------------------------------------------


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the index at ``root``.

    Raises:
        ArtifactError: no index there, or the manifest is unreadable or of another format.
    """
    path = root / "manifest.json"
    if not path.is_file():
        if root.exists() and not root.is_dir():
            raise ArtifactError(f"{str(root)!r} is a file, not an index folder; give the folder "
                                "'effstack index build' wrote")
        raise ArtifactError(f"no index at {str(root)!r} (no manifest.json); build one with 'effstack index build'")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _corrupt(root, f"manifest.json is unreadable ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _corrupt(root, f"manifest.json is not an {FORMAT} manifest")
    if doc.get("version") != VERSION:
        raise ArtifactError(f"index {str(root)!r} has format version {doc.get('version')!r}; this effstack reads "
                            f"version {VERSION}: rebuild it with 'effstack index build'")
    for key in ("generation", "model", "kind", "dim"):
        if key not in doc:
            raise _corrupt(root, f"manifest.json has no {key!r}")
    return doc


def write_manifest(root: Path, doc: dict[str, Any]) -> None:
    """Replace ``root/manifest.json`` atomically and durably.

    Raises:
        ArtifactError: the manifest cannot be written (the message names it).
    """
    atomic_write_json(root / "manifest.json", {"format": FORMAT, "version": VERSION, **doc}, sort_keys=True,
                      durable=True)


# --- snapshot ---------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What a generation holds: vectors by row, their ids and paths, and the removed rows."""

    vectors: np.ndarray
    ids: list[str]
    paths: list[str]
    dead: set[int] = field(default_factory=set)
    faiss_bytes: bytes | None = None


def write_snapshot(root: Path, generation: int, snap: Snapshot) -> Path:
    """Write generation ``generation`` into a temporary folder, then rename it into place (durably).

    A folder of that generation already there (left by a checkpoint that crashed before its manifest was
    written) is replaced.
    """
    final = gen_dir(root, generation)
    with atomic_dir(final, durable=True) as tmp:
        np.save(tmp / "vectors.npy", snap.vectors, allow_pickle=False)
        entries = {"ids": snap.ids, "paths": snap.paths, "dead": sorted(snap.dead)}
        (tmp / "entries.json").write_text(json.dumps(entries, separators=(",", ":")))
        if snap.faiss_bytes is not None:
            (tmp / "index.faiss").write_bytes(snap.faiss_bytes)
    return final


def read_snapshot(root: Path, generation: int, dim: int, approximate: bool) -> Snapshot:
    """Read generation ``generation``.

    Raises:
        ArtifactError: a file is missing (also when a writer checkpointed meanwhile and deleted this
            generation: the caller checks the manifest and retries), unreadable, or inconsistent.
    """
    folder = gen_dir(root, generation)
    if not folder.is_dir():
        raise _corrupt(root, f"the snapshot {folder.name} is missing")
    try:
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        entries = json.loads((folder / "entries.json").read_text())
        faiss_bytes = (folder / "index.faiss").read_bytes() if approximate else None
    except FileNotFoundError as exc:
        raise _corrupt(root, f"{folder.name}/{Path(exc.filename or '').name} is missing") from None
    except (OSError, ValueError) as exc:
        raise _corrupt(root, f"{folder.name} is unreadable ({' '.join(str(exc).split())[:120]})") from None
    ids, paths = entries.get("ids"), entries.get("paths")
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != dim:
        raise _corrupt(root, f"vectors.npy holds {vectors.dtype} {vectors.shape}, expected float32 (N, {dim})")
    if not isinstance(ids, list) or not isinstance(paths, list) or not len(ids) == len(paths) == len(vectors):
        raise _corrupt(root, f"entries.json does not list one id and path for each of the {len(vectors)} vectors")
    return Snapshot(vectors, ids, paths, set(entries.get("dead", [])), faiss_bytes)


# --- write-ahead log --------------------------------------------------------------------------------


@dataclass
class Record:
    """One acknowledged change: ``op`` "add" (ids, paths, vectors) or "remove" (ids)."""

    op: str
    ids: list[str]
    paths: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None

    def encode(self) -> bytes:
        head = json.dumps({"op": self.op, "ids": self.ids, "paths": self.paths}).encode()
        body = b"" if self.vectors is None else np.ascontiguousarray(self.vectors, np.float32).tobytes()
        payload = struct.pack("<I", len(head)) + head + body
        return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes, dim: int) -> Record:
        (n,) = struct.unpack_from("<I", payload)
        head = json.loads(payload[4 : 4 + n])
        body = payload[4 + n :]
        vectors = np.frombuffer(body, np.float32).reshape(-1, dim).copy() if head["op"] == "add" else None
        return cls(head["op"], list(head["ids"]), list(head.get("paths", [])), vectors)


def read_wal(root: Path, generation: int, dim: int) -> tuple[list[Record], int]:
    """The complete records of generation ``generation``'s log and the byte length they span.

    A last record cut short (a crash while writing it: never acknowledged) is left out.

    Raises:
        ArtifactError: a record before the end is damaged.
    """
    path = wal_path(root, generation)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records, pos = [], 0
    while pos < len(data):
        if len(data) - pos < _HEAD.size:
            break  # torn header
        magic, length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if magic != MAGIC:
            raise _corrupt(root, f"{path.name} has no record marker at byte {pos}")
        if end > len(data):
            break  # torn payload
        payload = data[pos + _HEAD.size : end]
        if zlib.crc32(payload) != crc:
            if end == len(data):
                break  # the last record, damaged while being written
            raise _corrupt(root, f"{path.name} fails its checksum at byte {pos}")
        try:
            records.append(Record.decode(payload, dim))
        except (ValueError, KeyError, struct.error) as exc:
            raise _corrupt(root, f"{path.name} has an undecodable record at byte {pos} ({exc})") from None
        pos = end
    return records, pos


class WalWriter:
    """Appends records to a generation's log; each :meth:`append` is durable when it returns."""

    def __init__(self, root: Path, generation: int, valid_bytes: int):
        path = wal_path(root, generation)
        new = not path.exists()
        self._f = open(path, "ab")
        if self._f.tell() != valid_bytes:  # drop a torn tail before appending after it
            self._f.truncate(valid_bytes)
            self._f.seek(valid_bytes)
        if new:
            fsync_dir(root)

    def append(self, record: Record) -> None:
        self._f.write(record.encode())
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


# --- writer lock ------------------------------------------------------------------------------------


class IndexLock:
    """An exclusive ``flock`` on ``INDEX/.lock``: one writing process per index (readers need none)."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self._fd: int | None = None

    def acquire(self) -> IndexLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"index {str(self.path.parent)!r} is being changed by another process; wait for it "
                              "to finish or stop it") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def stale_entries(root: Path, generation: int) -> Iterator[Path]:
    """Snapshots, logs and temporary folders of generations other than ``generation``."""
    keep = {gen_dir(root, generation).name, wal_path(root, generation).name}
    for child in root.iterdir():
        if child.name in keep:
            continue
        if child.name.startswith(("gen-", "wal-", ".gen-", ".manifest.")):  # .gen-*: atomic_dir's temporaries
            yield child
