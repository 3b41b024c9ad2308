"""The index: kinds and tuning, persistence, write-ahead log, crash safety, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from effstack.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from effstack.search import Index, UnknownIdError, exact_neighbours, normalize  # noqa: E402
from effstack.search import index as index_mod  # noqa: E402
from effstack.search import store, vectors  # noqa: E402

MODEL = {"fingerprint": "f00d", "name": "demo"}


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Vectors around 50 centres, like real embeddings (pure noise is the worst case for any ANN index)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    return normalize(centres[rng.integers(0, 50, n)] + 0.4 * rng.standard_normal((n, dim)))


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture
def ix(tmp_path):
    index = Index.create(tmp_path / "ix", MODEL, dim=16)
    yield index
    index.close(checkpoint=False)


def test_normalize_and_choose_kind():
    v = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(v, [[0.6, 0.8], [0, 0]])
    with pytest.raises(InputError, match="finite"):
        normalize(np.array([[np.nan, 1.0]]))
    assert [vectors.choose_kind(n) for n in (10, vectors.FLAT_MAX + 1, vectors.HNSW_MAX + 1)] == \
        ["flat", "hnsw", "ivfpq"]


def test_exact_neighbours_matches_sort():
    v = clustered(500)
    q = v[:7]
    want = np.argsort(-(q @ v.T), axis=1)[:, :5]
    assert (exact_neighbours(v, q, 5, chunk=64) == want).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_kinds_are_tuned_to_the_recall_target(kind):
    v = clustered(3000, dim=8)
    index = vectors.build(kind, v)
    t = vectors.tune(index, kind, v, target=0.9)
    assert t.param in ("efSearch", "nprobe") and t.recall >= 0.9
    q = vectors.tune_queries(v, 100, seed=5)
    assert vectors.recall(vectors.search(index, q, 10)[1], exact_neighbours(v, q, 10)) >= 0.85


def test_add_search_remove_replace(ix):
    v = clustered(100)
    assert ix.add(ids("a", 100), v, [f"/p/{i}.jpg" for i in range(100)]) == 100
    hit = ix.search(v[3], k=1)[0][0]
    assert (hit.id, hit.path) == ("a3", "/p/3.jpg") and hit.score == pytest.approx(1.0, abs=1e-5)
    assert ix.search_id("a3", 5)[0].id != "a3"
    assert ix.remove(["a3", "nope"]) == 1
    assert "a3" not in ix and all(h.id != "a3" for h in ix.search(v[3], 10)[0])
    ix.add(["a4"], v[50:51], ["/new.jpg"])  # replaces
    assert len(ix) == 99 and ix.path_of("a4") == "/new.jpg"
    with pytest.raises(UnknownIdError, match="no image with id 'a3'"):
        ix.vector("a3")
    with pytest.raises(InputError, match="16 values"):
        ix.add(["x"], np.ones((1, 8), np.float32))
    with pytest.raises(InputError, match="unique"):
        ix.add(["x", "x"], v[:2])


def test_reopen_replays_log_then_checkpoint_compacts(ix, tmp_path):
    v = clustered(50)
    ix.add(ids("a", 50), v)
    ix.remove(["a0"])
    ix.close(checkpoint=False)
    again = Index.open(tmp_path / "ix", writable=True)
    assert len(again) == 49 and again.info()["pending_batches"] == 2
    again.checkpoint()
    assert again.generation == 1 and len(again._ids) == 49  # removed row compacted away
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == [".lock", "gen-000001", "manifest.json",
                                                                    "wal-000001.log"]
    again.close()
    ro = Index.open(tmp_path / "ix")
    assert ro.search(v[1], 1)[0][0].id == "a1"
    with pytest.raises(ConfigError, match="read-only"):
        ro.add(["b"], v[:1])


def test_kind_switches_by_size_at_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "FLAT_MAX", 100)
    v = clustered(600)
    with Index.create(tmp_path / "ix", MODEL, dim=16, recall_target=0.9) as ix:
        ix.add(ids("a", 600), v)
    info = Index.open(tmp_path / "ix").info()
    assert info["kind"] == "hnsw" and info["tuning"]["param"] == "efSearch" and info["tuning"]["recall"] >= 0.9
    ro = Index.open(tmp_path / "ix")
    assert ro.search(v[10], 1)[0][0].id == "a10"


def test_one_writer_at_a_time(ix, tmp_path):
    with pytest.raises(ConfigError, match="another process"):
        Index.open(tmp_path / "ix", writable=True)


def test_other_model_is_refused(ix, tmp_path):
    with pytest.raises(ArtifactError, match=r"built with demo \(fingerprint f00d\), not with this model"):
        Index.open(tmp_path / "ix", fingerprint="beef")


def test_create_refuses_existing(ix, tmp_path):
    with pytest.raises(ConfigError, match="already holds an index"):
        Index.create(tmp_path / "ix", MODEL, dim=16)


def test_missing_and_corrupt_files_are_clear(ix, tmp_path):
    root = tmp_path / "ix"
    ix.add(ids("a", 10), clustered(10))
    ix.close()
    with pytest.raises(ArtifactError, match="no index at"):
        Index.open(tmp_path / "nothing")
    (root / "gen-000001" / "entries.json").write_text("{bad json")
    with pytest.raises(ArtifactError, match="is corrupt: gen-000001 is unreadable"):
        Index.open(root)
    (root / "gen-000001" / "entries.json").unlink()
    with pytest.raises(ArtifactError, match="entries.json is missing"):
        Index.open(root)
    (root / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(ArtifactError, match="is corrupt: manifest.json is not"):
        Index.open(root)
    (root / "manifest.json").write_text("\x00\x01")
    with pytest.raises(ArtifactError, match="manifest.json is unreadable"):
        Index.open(root)


def test_corrupt_faiss_file(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "FLAT_MAX", 10)
    with Index.create(tmp_path / "ix", MODEL, dim=16) as ix:
        ix.add(ids("a", 40), clustered(40))
    (tmp_path / "ix" / "gen-000001" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="index.faiss is unreadable"):
        Index.open(tmp_path / "ix")


def test_torn_log_tail_is_dropped_but_damage_before_it_is_an_error(ix, tmp_path):
    root = tmp_path / "ix"
    ix.add(["a"], clustered(1))
    ix.add(["b"], clustered(1, seed=1))
    ix.close(checkpoint=False)
    log = root / "wal-000000.log"
    data = log.read_bytes()
    log.write_bytes(data[:-7])  # a crash in the middle of writing the second record
    again = Index.open(root, writable=True)
    assert again.ids == ["a"]
    again.add(["c"], clustered(1, seed=2))  # appends after the last good record
    again.close(checkpoint=False)
    assert Index.open(root).ids == ["a", "c"]
    raw = bytearray(log.read_bytes())
    raw[20] ^= 0xFF  # flip a byte inside the first record
    log.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="fails its checksum"):
        Index.open(root)


def test_searches_during_adds_see_whole_batches(ix):
    """Each batch is 10 copies of one vector; a concurrent search sees all 10 or none of them."""
    rng = np.random.default_rng(0)
    batches = normalize(rng.standard_normal((30, 16)))
    seen: list[int] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            for b in range(30):
                hits = [h for h in ix.search(batches[b], k=10)[0] if h.id.startswith(f"b{b}-")]
                seen.append(len(hits))

    t = threading.Thread(target=reader)
    t.start()
    for b in range(30):
        ix.add([f"b{b}-{j}" for j in range(10)], np.repeat(batches[b : b + 1], 10, 0))
    stop.set()
    t.join()
    assert set(seen) <= {0, 10} and 10 in seen


def test_readers_opening_during_checkpoints_see_whole_generations(tmp_path):
    root = tmp_path / "ix"
    counts: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with Index.create(root, MODEL, dim=16) as ix:
        def reader():
            while not stop.is_set():
                try:
                    counts.append(len(Index.open(root)))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        for b in range(15):
            ix.add(ids(f"b{b}-", 5), clustered(5, seed=b))
            ix.checkpoint()
        stop.set()
        t.join()
    assert not errors and counts and all(c % 5 == 0 for c in counts)


_WRITER = """
import sys, numpy as np
from effstack.search import Index
ix = Index.open(sys.argv[1], writable=True)
rng = np.random.default_rng(0)
for b in range(100000):
    ix.add([f"b{b}-{j}" for j in range(4)], rng.standard_normal((4, 16)).astype("float32"))
    print(b, flush=True)
"""


def test_kill_during_adds_keeps_every_acknowledged_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "CHECKPOINT_RECORDS", 10**9)
    root = tmp_path / "ix"
    Index.create(root, MODEL, dim=16).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER.replace("ix = Index", "import effstack.search.index as m; "
                             "m.CHECKPOINT_RECORDS = 7\nix = Index"), str(root)],
                            stdout=subprocess.PIPE, text=True, env=env)
    acked = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        acked = int(line)
        if acked >= 25:  # several checkpoints (every 7 batches) and log appends have happened
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ix = Index.open(root)
    for b in range(acked + 1):
        assert f"b{b}-3" in ix, f"acknowledged batch {b} lost"
    assert len(ix) % 4 == 0
    json.loads((root / "manifest.json").read_text())


def test_wal_record_round_trip():
    rec = store.Record("add", ["x", "y"], ["/x", "/y"], np.arange(8, dtype=np.float32).reshape(2, 4))
    raw = rec.encode()
    back = store.Record.decode(raw[12:], 4)
    assert back.ids == ["x", "y"] and back.paths == ["/x", "/y"] and (back.vectors == rec.vectors).all()
    assert Path(store.wal_path(Path("/r"), 3)).name == "wal-000003.log"


def test_pinned_ivfpq_is_exact_until_it_can_train(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "IVFPQ_MIN", 500)
    v = clustered(1500, dim=8)
    with Index.create(tmp_path / "ix", MODEL, dim=8, kind="ivfpq", recall_target=0.9) as ix:
        ix.add(ids("a", 100), v[:100])
        ix.checkpoint()
        assert ix.kind == "flat"
        ix.add(ids("b", 1400), v[100:])
    info = Index.open(tmp_path / "ix").info()
    assert info["kind"] == "ivfpq" and info["tuning"]["param"] == "nprobe" and info["tuning"]["recall"] >= 0.9
