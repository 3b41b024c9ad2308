"""IVF-Flat above IVF_FROM vectors, and single queries on one OpenMP thread."""

from __future__ import annotations

import pytest

faiss = pytest.importorskip("faiss")

from effstack.search import Index, exact_neighbours, vectors

from .test_index import MODEL, clustered, ids


def test_choose_kind_takes_ivf_flat_from_ivf_from():
    assert [vectors.choose_kind(n) for n in (vectors.FLAT_MAX + 1, vectors.IVF_FROM - 1, vectors.IVF_FROM,
                                              vectors.HNSW_MAX, vectors.HNSW_MAX + 1)] == \
        ["hnsw", "hnsw", "ivf", "ivf", "ivfpq"]


def test_ivf_flat_is_tuned_to_the_recall_target():
    v = clustered(3000, dim=8)
    index = vectors.build("ivf", v)
    assert isinstance(faiss.downcast_index(index), faiss.IndexIVFFlat)
    t = vectors.tune(index, "ivf", v, target=0.9)
    assert t.param == "nprobe" and t.recall >= 0.9
    q = vectors.tune_queries(v, 100, seed=5)
    assert vectors.recall(vectors.search(index, q, 10)[1], exact_neighbours(v, q, 10)) >= 0.85


def test_single_query_runs_on_one_thread_and_restores_the_setting():
    v = clustered(500, dim=8)
    index = vectors.build("flat", v)
    seen = []

    class Spy:
        ntotal = index.ntotal

        def search(self, q, k):
            seen.append((len(q), faiss.omp_get_max_threads()))
            return index.search(q, k)

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        assert vectors.search(Spy(), v[:1], 3)[1][0, 0] == 0
        assert vectors.search(Spy(), v[:4], 3)[1].shape == (4, 3)
        assert seen == [(1, 1), (4, 2)] and faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)


def test_index_switches_to_ivf_flat_at_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "FLAT_MAX", 100)
    monkeypatch.setattr(vectors, "IVF_FROM", 1000)
    v = clustered(1500)
    with Index.create(tmp_path / "ix", MODEL, dim=16, recall_target=0.9) as ix:
        ix.add(ids("a", 1500), v)
    ro = Index.open(tmp_path / "ix")
    info = ro.info()
    assert info["kind"] == "ivf" and info["tuning"]["param"] == "nprobe" and info["tuning"]["recall"] >= 0.9
    assert ro.search(v[10], 1)[0][0].id == "a10"
