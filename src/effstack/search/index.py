"""The :class:`Index`: image ids, paths and embeddings in a FAISS index that survives crashes.

Every change is a batch: :meth:`Index.add` and :meth:`Index.remove` append one record to the write-ahead log,
fsync it, then apply it in memory, all under one lock, so when they return the batch is acknowledged (a kill
afterwards cannot lose it) and a concurrent :meth:`Index.search` sees the index before or after the batch,
never half of it. :meth:`Index.checkpoint` folds the log into a new snapshot (compacting removed rows and
switching kind when the size calls for it; see :mod:`.vectors`).

>>> import numpy as np, tempfile
>>> ix = Index.create(tempfile.mkdtemp() + "/ix", {"fingerprint": "abc", "name": "demo"}, dim=4)
>>> ix.add(["a", "b"], np.eye(4, dtype="float32")[:2], ["a.jpg", "b.jpg"])
2
>>> ix.search(np.eye(4, dtype="float32")[:1], k=1)[0][0].id
'a'
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InputError, UserError
from . import store, vectors as vec
from .store import Record, Snapshot

__all__ = ["Hit", "Index", "UnknownIdError", "DEFAULT_RECALL_TARGET"]

DEFAULT_RECALL_TARGET = 0.95
CHECKPOINT_RECORDS = 512  # fold the log into a snapshot after this many batches
_OPEN_RETRIES = 5


class UnknownIdError(UserError, LookupError):
    """No image (or text) with that id in the index."""


@dataclass(frozen=True)
class Hit:
    """One neighbour: its id, its cosine similarity to the query, and its path (in a text index: the text)."""

    id: str
    score: float
    path: str
    modality: str = "image"

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "score", "path"}``, or ``{"id", "score", "text"}`` for a hit of a text index."""
        return {"id": self.id, "score": round(self.score, 6), "text" if self.modality == "text" else "path": self.path}

    @property
    def text(self) -> str:
        """The text of a text index's hit (its stored "path")."""
        return self.path


def _describe(model: dict[str, Any]) -> str:
    name = model.get("name") or "a model"
    layer = f", layer {model['layer']}" if model.get("layer") else ""
    return f"{name}{layer} (fingerprint {model.get('fingerprint', '?')})"


class Index:
    """An on-disk similarity index of L2-normalised embeddings; build with :meth:`create`, load with :meth:`open`.

    Thread-safe: one lock guards every read and change. Only a *writable* index (one process at a time per
    folder) may change; read-only ones see the acknowledged state when they were opened.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], snap: Snapshot, records: Sequence[Record],
                 wal_bytes: int, lock: store.IndexLock | None):
        self.root = root
        self.model: dict[str, Any] = manifest["model"]
        self.dim = int(manifest["dim"])
        self.kind: str = manifest["kind"]
        self.pin: str | None = manifest.get("pin")  # the kind the user asked for (None: chosen by size)
        self.recall_target = float(manifest.get("recall_target", DEFAULT_RECALL_TARGET))
        self.tuning = vec.Tuning.from_dict(manifest.get("tuning", {}))
        self.tuned_at = int(manifest.get("tuned_at", 0))
        self.generation = int(manifest["generation"])
        self.data: dict[str, Any] = dict(manifest.get("data") or {})  # what the build indexed (a text corpus)
        self._lock = threading.RLock()
        self._writer_lock = lock
        self._n = len(snap.vectors)
        self._vecs = np.array(snap.vectors, dtype=np.float32, copy=True)
        self._ids, self._paths = list(snap.ids), list(snap.paths)
        self._dead = set(snap.dead)
        self._row = {i: r for r, i in enumerate(self._ids) if r not in self._dead}
        self._faiss = self._load_faiss(snap)
        for rec in records:
            self._apply(rec)
        self._pending = len(records)
        self._wal = store.WalWriter(root, self.generation, wal_bytes) if lock else None

    # --- opening ------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, model: dict[str, Any], dim: int, kind: str | None = None,
               recall_target: float = DEFAULT_RECALL_TARGET, data: dict[str, Any] | None = None) -> Index:
        """Make an empty index at ``path`` (a new folder) for embeddings of ``dim`` floats from ``model``.

        Args:
            model: what made the embeddings; ``fingerprint`` is required (other keys are kept: name, spec, layer).
            kind: pin the index kind (flat, hnsw, ivf, ivfpq); None chooses by size at each checkpoint. An ivf
                or ivfpq index is exact until it holds enough vectors to train on (:data:`~.vectors.IVFPQ_MIN`).
            recall_target: recall@10 an approximate kind is tuned to reach against exact search.
            data: what the index is built from, kept in the manifest (a text corpus's source and fingerprint).

        Raises:
            ConfigError: ``path`` already holds an index or a file; a bad kind or target; dim < 1.
        """
        root = Path(path).expanduser()
        if (root / "manifest.json").exists():
            raise ConfigError(f"{str(root)!r} already holds an index; open it, or give another --out")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ConfigError(f"{str(root)!r} exists and is not an empty folder; give a new path for the index")
        if kind is not None and kind not in vec.KINDS:
            raise ConfigError(f"index kind must be one of {', '.join(vec.KINDS)}, got {kind!r}")
        if not 0 < recall_target <= 1:
            raise ConfigError(f"the recall target must be within (0, 1], got {recall_target}")
        if dim < 1 or not model.get("fingerprint"):
            raise ConfigError(f"an index needs dim >= 1 and a model fingerprint, got dim {dim}")
        vec.faiss()  # fail early, before any folder is made, when faiss is missing
        root.mkdir(parents=True, exist_ok=True)
        empty = np.zeros((0, dim), np.float32)
        kind0 = "flat" if kind is None or kind in vec.IVF_KINDS else kind
        faiss_bytes = _serialize(vec.build(kind0, empty)) if kind0 != "flat" else None
        store.write_snapshot(root, 0, Snapshot(empty, [], [], set(), faiss_bytes))
        store.write_manifest(root, {"generation": 0, "model": model, "dim": int(dim), "kind": kind0,
                                    "pin": kind, "recall_target": recall_target, "count": 0,
                                    **({"data": data} if data else {})})
        return cls.open(root, writable=True)

    @classmethod
    def open(cls, path: str | Path, writable: bool = False, fingerprint: str | None = None) -> Index:
        """Load the index at ``path``: its snapshot plus every acknowledged change in its log.

        Args:
            writable: take the folder's writer lock (one writing process at a time) to add and remove.
            fingerprint: refuse the index unless it was built by the model with this fingerprint.

        Raises:
            ArtifactError: no index there, a damaged file, or a different model's index.
            ConfigError: ``writable`` and another process is writing it.
        """
        root = Path(path).expanduser()
        lock = store.IndexLock(root).acquire() if writable and (root / "manifest.json").is_file() else None
        try:
            for _ in range(_OPEN_RETRIES):
                manifest = store.read_manifest(root)
                g = int(manifest["generation"])
                if fingerprint is not None and manifest["model"].get("fingerprint") != fingerprint:
                    raise ArtifactError(
                        f"index {str(root)!r} was built with {_describe(manifest['model'])}, not with this model "
                        f"(fingerprint {fingerprint}); use the model that built it, or build a new index for this "
                        "one with 'effstack index build'")
                try:
                    snap = store.read_snapshot(root, g, int(manifest["dim"]), manifest["kind"] != "flat")
                    records, wal_bytes = store.read_wal(root, g, int(manifest["dim"]))
                except (FileNotFoundError, ArtifactError):
                    if not lock and store.read_manifest(root)["generation"] != g:
                        continue  # a writer checkpointed (and deleted generation g) while we read: read the new one
                    raise
                if lock or store.read_manifest(root)["generation"] == g:
                    break
            else:
                raise ArtifactError(f"index {str(root)!r} kept changing while being read; retry")
            index = cls(root, manifest, snap, records, wal_bytes, lock)
        except BaseException:
            if lock:
                lock.release()
            raise
        if lock:
            for stale in store.stale_entries(root, index.generation):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        return index

    def _load_faiss(self, snap: Snapshot) -> Any:
        if self.kind == "flat" or snap.faiss_bytes is None:
            return vec.build("flat", self._vecs)
        f = vec.faiss()
        try:
            index = f.deserialize_index(np.frombuffer(snap.faiss_bytes, np.uint8))
        except RuntimeError as exc:
            raise store._corrupt(self.root, f"index.faiss is unreadable ({str(exc).splitlines()[0][:100]})") from None
        if index.ntotal != self._n or index.d != self.dim:
            raise store._corrupt(self.root, f"index.faiss holds {index.ntotal} vectors of {index.d} floats, "
                                 f"expected {self._n} of {self.dim}")
        if self.tuning.param:
            vec.set_search_param(index, self.kind, self.tuning.value)
        return index

    # --- reading ------------------------------------------------------------------------------------

    @property
    def modality(self) -> str:
        """``"text"`` for an index of texts (its model says so; each "path" holds the text), else ``"image"``."""
        return "text" if self.model.get("modality") == "text" else "image"

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row

    @property
    def ids(self) -> list[str]:
        """The ids of the images in the index, in the order they were added."""
        with self._lock:
            return [self._ids[r] for r in sorted(self._row.values())]

    def path_of(self, image_id: str) -> str:
        """The path recorded for ``image_id``. Raises :class:`UnknownIdError`."""
        with self._lock:
            return self._paths[self._lookup(image_id)]

    def vector(self, image_id: str) -> np.ndarray:
        """The stored embedding of ``image_id`` (dim,). Raises :class:`UnknownIdError`."""
        with self._lock:
            return self._vecs[self._lookup(image_id)].copy()

    def _lookup(self, image_id: str) -> int:
        try:
            return self._row[image_id]
        except KeyError:
            raise UnknownIdError(f"no {self.modality} with id {image_id!r} in index {str(self.root)!r}; list the ids "
                                 "with 'effstack index info --ids'") from None

    def search(self, queries: np.ndarray, k: int = 10, exclude: Sequence[str] = ()) -> list[list[Hit]]:
        """The ``k`` nearest images of each query embedding, best first (queries are normalised here).

        Args:
            queries: ``(Q, dim)`` or ``(dim,)`` embeddings.
            exclude: ids never to return (e.g. the query image itself when searching by id).

        Raises:
            InputError: wrong dimension, or k < 1.
        """
        q = vec.normalize(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.dim:
            raise InputError(f"query embeddings must have {self.dim} values, got {q.shape[1]}; embed the query "
                             "with the model that built the index")
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        with self._lock:
            skip = self._dead | {self._row[i] for i in exclude if i in self._row}
            if not self._row:
                return [[] for _ in q]
            scores, labels = vec.search(self._faiss, q, k + len(skip))
            out = []
            for srow, lrow in zip(scores, labels):
                hits = [Hit(self._ids[lab], float(s), self._paths[lab], self.modality)
                        for s, lab in zip(srow, lrow) if lab >= 0 and lab not in skip]
                out.append(hits[:k])
            return out

    def search_id(self, image_id: str, k: int = 10) -> list[Hit]:
        """The ``k`` nearest images of a stored image (not counting itself). Raises :class:`UnknownIdError`."""
        return self.search(self.vector(image_id), k, exclude=[image_id])[0]

    def info(self) -> dict[str, Any]:
        """Size, kind, tuning, model and folder, for ``effstack index info``."""
        with self._lock:
            return {"path": str(self.root), "count": len(self._row), "dim": self.dim, "kind": self.kind,
                    "generation": self.generation, "pending_batches": self._pending, "model": self.model,
                    "recall_target": self.recall_target, "tuning": self.tuning.to_dict(),
                    "modality": self.modality, **({"data": self.data} if self.data else {})}

    # --- changing -----------------------------------------------------------------------------------

    def _writable(self) -> store.WalWriter:
        if self._wal is None:
            raise ConfigError(f"index {str(self.root)!r} was opened read-only; open it with writable=True to change it")
        return self._wal

    def add(self, ids: Sequence[str], vectors: np.ndarray, paths: Sequence[str] | None = None) -> int:
        """Add (or replace, for an id already present) a batch; durable and visible when it returns.

        Raises:
            InputError: lengths differ, duplicate or empty ids, or the wrong dimension.
            ConfigError: the index is read-only.
        """
        ids = [str(i) for i in ids]
        paths = [str(p) for p in (paths if paths is not None else ids)]
        v = vec.normalize(vectors)
        if not (len(ids) == len(paths) == len(v)):
            raise InputError(f"a batch needs one id, path and vector each, got {len(ids)}, {len(paths)}, {len(v)}")
        if v.shape[1] != self.dim:
            raise InputError(f"embeddings must have {self.dim} values for this index, got {v.shape[1]}; embed with "
                             "the model that built it")
        if len(set(ids)) != len(ids) or not all(ids):
            raise InputError("ids in one batch must be unique and non-empty")
        if not ids:
            return 0
        self._commit(Record("add", ids, paths, v))
        return len(ids)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove the images with these ids (unknown ids are ignored); returns how many were removed."""
        present = [str(i) for i in dict.fromkeys(ids) if str(i) in self._row]
        if present:
            self._commit(Record("remove", present))
        return len(present)

    def _commit(self, record: Record) -> None:
        wal = self._writable()
        with self._lock:
            wal.append(record)  # durable before it is visible: acknowledged means logged
            self._apply(record)
            self._pending += 1
            if self._pending >= CHECKPOINT_RECORDS or len(self._dead) > max(1024, self._n // 20):
                self.checkpoint()

    def _apply(self, rec: Record) -> None:
        for image_id in rec.ids:
            row = self._row.pop(image_id, None)
            if row is not None:
                self._dead.add(row)
        if rec.op != "add":
            return
        assert rec.vectors is not None
        n = len(rec.vectors)
        if self._n + n > len(self._vecs):  # grow by doubling: appends stay amortised O(1)
            grown = np.empty((max(2 * len(self._vecs), self._n + n, 64), self.dim), np.float32)
            grown[: self._n] = self._vecs[: self._n]
            self._vecs = grown
        self._vecs[self._n : self._n + n] = rec.vectors
        self._faiss.add(np.ascontiguousarray(rec.vectors))
        for j, image_id in enumerate(rec.ids):
            self._row[image_id] = self._n + j
        self._ids += rec.ids
        self._paths += rec.paths
        self._n += n

    def checkpoint(self) -> None:
        """Fold the log into a new snapshot; compact removed rows, and re-choose and re-tune the kind by size."""
        wal = self._writable()
        with self._lock:
            alive = len(self._row)
            kind = self.pin or vec.choose_kind(alive)
            if kind in vec.IVF_KINDS and alive < vec.IVFPQ_MIN:
                kind = "flat" if self.pin else "hnsw"
            retrain = kind in vec.IVF_KINDS and alive >= 4 * max(self.tuned_at, 1)  # its lists fit the data it saw
            rebuild = retrain or kind != self.kind or bool(
                self._dead and (self.kind == "flat" or len(self._dead) > self._n // 20))
            if rebuild:
                rows = sorted(self._row.values())
                self._vecs = np.ascontiguousarray(self._vecs[rows])
                self._ids = [self._ids[r] for r in rows]
                self._paths = [self._paths[r] for r in rows]
                self._n, self._dead = len(rows), set()
                self._row = {i: r for r, i in enumerate(self._ids)}
                self.kind = kind
                self._faiss = vec.build(kind, self._vecs)
            if kind != "flat" and (rebuild or alive >= 2 * max(self.tuned_at, 1)):
                self.tuning = vec.tune(self._faiss, kind, self._vecs[: self._n], self.recall_target)
                self.tuned_at = alive
            faiss_bytes = _serialize(self._faiss) if self.kind != "flat" else None
            snap = Snapshot(self._vecs[: self._n], self._ids, self._paths, self._dead, faiss_bytes)
            g = self.generation + 1
            store.write_snapshot(self.root, g, snap)
            store.write_manifest(self.root, {
                "generation": g, "model": self.model, "dim": self.dim, "kind": self.kind,
                "pin": self.pin, "recall_target": self.recall_target, "count": alive,
                "tuning": self.tuning.to_dict(), "tuned_at": self.tuned_at,
                **({"data": self.data} if self.data else {})})
            wal.close()
            self.generation, self._pending = g, 0
            self._wal = store.WalWriter(self.root, g, 0)
            for stale in store.stale_entries(self.root, g):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    def close(self, checkpoint: bool = True) -> None:
        """Checkpoint pending changes (when writable and asked) and release the writer lock."""
        with self._lock:
            if self._wal is not None:
                try:
                    if checkpoint and self._pending:
                        self.checkpoint()
                finally:
                    with contextlib.suppress(OSError):
                        self._wal.close()
                    self._wal = None
            if self._writer_lock is not None:
                self._writer_lock.release()
                self._writer_lock = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serialize(index: Any) -> bytes:
    return vec.faiss().serialize_index(index).tobytes()
