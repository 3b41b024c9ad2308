#!/usr/bin/env python
"""Visual search measured: the approximate index against exact search, index-build rate, end-to-end query
latency, and near-duplicate retrieval on real photographs.

    # 1,000,000 synthetic 128-d vectors: recall@10 against exact search and per-query latency (one thread)
    nice -n 5 python benchmarks/search.py vectors --n 1000000 --dim 128 --json results/search_vectors.json
    # a 10,000-image folder: build rate, then end-to-end query latency (decode + embed + search)
    nice -n 5 python benchmarks/search.py images --n 10000 --model resnet18 --json results/search_images.json
    # edited copies of scikit-image's photographs among distractors: recall@1, and INT8 neighbours against fp32
    nice -n 5 python benchmarks/search.py neardup --model embedder.pt --json results/search_neardup.json

Synthetic vectors are a mixture of Gaussians (``--clusters`` centres, ``--spread`` noise relative to a
centre's norm), like real embeddings; the queries are fresh draws from the same mixture, never stored
vectors. Latency is timed per query through :meth:`effstack.search.Index.search` (single-threaded FAISS,
Python and locking included) in ``--rounds`` rounds; each figure is printed as the median over rounds
with its min..max.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from effstack.hardware import library_versions, machine_info
from effstack.measure.stats import percentile, spread
from effstack.report.jsonio import atomic_write_text
from effstack.search import Index, normalize
from effstack.search import vectors as vec


def mixture(n: int, dim: int, clusters: int, noise: float, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors drawn around ``clusters`` fixed centres (the centres depend on dim and clusters only)."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        out[s : s + m] = normalize(centres[rng.integers(0, clusters, m)]
                                   + noise * rng.standard_normal((m, dim), dtype=np.float32))
    return out


def _fmt(s: Any, unit: str = "", digits: int = 3) -> str:
    return f"{s.median:.{digits}f}{unit} (min {s.min:.{digits}f}, max {s.max:.{digits}f}, n={s.n})"


def time_queries(index: Index, queries: np.ndarray, k: int) -> tuple[list[float], list[list[str]]]:
    """Per-query latency in ms through Index.search, and the ids found."""
    lat, found = [], []
    for q in queries:
        t0 = time.perf_counter_ns()
        hits = index.search(q, k)[0]
        lat.append((time.perf_counter_ns() - t0) / 1e6)
        found.append([h.id for h in hits])
    return lat, found


def cmd_vectors(args: argparse.Namespace) -> dict[str, Any]:
    f = vec.faiss()
    f.omp_set_num_threads(args.build_threads)
    print(f"generating {args.n:,} vectors of {args.dim} ({args.clusters} clusters, spread {args.spread}) ...",
          flush=True)
    data = mixture(args.n, args.dim, args.clusters, args.spread, seed=1)
    queries = mixture(args.queries, args.dim, args.clusters, args.spread, seed=2)
    ids = [str(i) for i in range(args.n)]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp) / "ix"
        t0 = time.perf_counter()
        ix = Index.create(root, {"fingerprint": "synthetic", "name": "synthetic"}, args.dim, args.kind,
                          args.recall_target)
        for s in range(0, args.n, args.add_batch):
            ix.add(ids[s : s + args.add_batch], data[s : s + args.add_batch])
        add_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ix.checkpoint()  # builds the approximate index, tunes it, writes the snapshot
        build_s = time.perf_counter() - t0
        info = ix.info()
        ix.close()
        print(f"logged {args.n:,} adds in {add_s:.1f} s; built + tuned + saved {info['kind']} in {build_s:.1f} s: "
              f"{info['tuning']}", flush=True)
        t0 = time.perf_counter()
        ix = Index.open(root)
        load_s = time.perf_counter() - t0
        print("exact neighbours of the queries ...", flush=True)
        exact = vec.exact_neighbours(data, queries, args.k)
        truth = [[str(j) for j in row] for row in exact]
        f.omp_set_num_threads(1)
        p50s, p99s, recalls = [], [], []
        for r in range(args.rounds):
            lat, found = time_queries(ix, queries, args.k)
            rec = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, truth)]))
            p50s.append(percentile(lat, 50))
            p99s.append(percentile(lat, 99))
            recalls.append(rec)
            print(f"  round {r + 1}: recall@{args.k} {rec:.4f}  p50 {p50s[-1]:.3f} ms  p99 {p99s[-1]:.3f} ms",
                  flush=True)
        raw = ix._faiss  # the same index without effstack's wrapper: how much the wrapper costs
        raw_lat = []
        for q in queries:
            t0n = time.perf_counter_ns()
            raw.search(q[None], args.k)
            raw_lat.append((time.perf_counter_ns() - t0n) / 1e6)
    out = {"n": args.n, "dim": args.dim, "clusters": args.clusters, "spread": args.spread, "k": args.k,
           "queries": args.queries, "kind": info["kind"], "tuning": info["tuning"], "add_s": add_s,
           "build_tune_save_s": build_s, "load_s": load_s, "recall": spread(recalls).to_dict(),
           "p50_ms": spread(p50s).to_dict(), "p99_ms": spread(p99s).to_dict(),
           "faiss_only_p99_ms": percentile(raw_lat, 99),
           "pass": bool(spread(recalls).median >= 0.95 and spread(p99s).median <= 2.0)}
    print(f"{info['kind']} over {args.n:,} x {args.dim}: recall@{args.k} {_fmt(spread(recalls))}; "
          f"p99 {_fmt(spread(p99s), ' ms')}; p50 {_fmt(spread(p50s), ' ms')}; FAISS alone p99 "
          f"{out['faiss_only_p99_ms']:.3f} ms; load {load_s:.1f} s -> {'PASS' if out['pass'] else 'FAIL'} "
          "(recall >= 0.95 at p99 <= 2 ms)")
    return out


# --- images -------------------------------------------------------------------------------------------


def write_folder(folder: Path, n: int, size: int = 256, seed: int = 0) -> list[Path]:
    """``n`` distinct JPEG 'photos' (see :func:`synthetic_photo`), written once and reused by later runs."""
    from PIL import Image

    from effstack.search.contrastive import synthetic_photo

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{i // 1000:03d}" / f"photo{i:06d}.jpg"
        paths.append(p)
        if not p.exists():
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(synthetic_photo(np.random.default_rng([seed, i]), size)).save(p, quality=90)
    return paths


def cmd_images(args: argparse.Namespace) -> dict[str, Any]:
    from effstack.cli.index import index_images
    from effstack.models.spec import ModelSpec, InputSpec
    from effstack.search import load_embedder

    folder = Path(args.folder).expanduser()
    print(f"writing {args.n} JPEGs to {folder} (kept for reruns) ...", flush=True)
    paths = write_folder(folder, args.n)
    inp = InputSpec(shape=tuple(args.input_shape), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    emb = load_embedder(ModelSpec(args.model, weights=args.weights, arch=args.arch, input=inp), None,
                        args.engine, args.precision, args.threads, args.batch)
    print(f"model {args.model} ({emb.layer}, {emb.dim} values) on {emb.session.engine} {emb.session.precision}",
          flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        ix = Index.create(Path(tmp) / "ix", emb.describe(), emb.dim)
        items = [(p.relative_to(folder).as_posix(), p) for p in paths]
        t0 = time.perf_counter()
        added, errors = index_images(ix, emb, items)
        ix.checkpoint()
        build_s = time.perf_counter() - t0
        rate = added / build_s
        print(f"indexed {added} images in {build_s:.1f} s: {rate:.1f} images/s ({len(errors)} unreadable)", flush=True)
        queries = [p.read_bytes() for p in paths[: args.queries]]
        emb.batch = 1
        p50s, p99s = [], []
        for r in range(args.rounds):
            lat = []
            for q in queries:
                t0n = time.perf_counter_ns()
                ix.search(emb.embed_images([q]), 10)
                lat.append((time.perf_counter_ns() - t0n) / 1e6)
            p50s.append(percentile(lat, 50))
            p99s.append(percentile(lat, 99))
            print(f"  round {r + 1}: end-to-end p50 {p50s[-1]:.2f} ms  p99 {p99s[-1]:.2f} ms", flush=True)
        ix.close(checkpoint=False)
    emb.close()
    out = {"n": args.n, "model": args.model, "input_shape": list(args.input_shape), "engine": emb.session.engine,
           "precision": emb.session.precision, "batch": args.batch, "build_s": build_s, "images_per_s": rate,
           "queries": len(queries), "e2e_p50_ms": spread(p50s).to_dict(), "e2e_p99_ms": spread(p99s).to_dict()}
    out["budget_ms"] = args.budget_ms
    out["pass"] = bool(spread(p99s).median <= args.budget_ms)
    print(f"build rate {rate:.1f} images/s; end-to-end query (decode + embed + search) p99 "
          f"{_fmt(spread(p99s), ' ms', 2)}, p50 {_fmt(spread(p50s), ' ms', 2)}; "
          f"{'within' if out['pass'] else 'OVER'} the {args.budget_ms:g} ms budget")
    return out


# --- near duplicates ----------------------------------------------------------------------------------


def _png(a: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _retrieval(emb: Any, collection: list[bytes], ids: list[str], queries: list[bytes], answers: list[str],
               tmp: str) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Index ``collection`` with ``emb``, search each query; recall@1 and @10 of its original."""
    v = emb.embed_images(collection)
    q = emb.embed_images(queries)
    ix = Index.create(Path(tempfile.mkdtemp(dir=tmp)) / "ix", emb.describe(), emb.dim)
    ix.add(ids, v)
    hits = ix.search(q, 10)
    ix.close(checkpoint=False)
    r1 = float(np.mean([h[0].id == a for h, a in zip(hits, answers)]))
    r10 = float(np.mean([a in {x.id for x in h} for h, a in zip(hits, answers)]))
    return {"recall_at_1": r1, "recall_at_10": r10}, v, q


def cmd_neardup(args: argparse.Namespace) -> dict[str, Any]:
    from effstack.models.spec import ModelSpec
    from effstack.search import decode_image, load_embedder
    from effstack.search.contrastive import FACTORY, augment_copies, photos, synthetic_photo

    spec = ModelSpec(FACTORY, weights=args.model) if args.model.endswith((".pt", ".pth")) else ModelSpec(args.model)
    originals = photos()
    rng = np.random.default_rng(args.seed + 7)
    distractors = [synthetic_photo(rng, 256) for _ in range(args.distractors)]
    collection = [_png(a) for a in originals.values()] + [_png(a) for a in distractors]
    ids = list(originals) + [f"distractor{i}" for i in range(len(distractors))]
    queries, answers = [], []
    for j, (name, img) in enumerate(originals.items()):
        for copy in augment_copies(img, args.copies, seed=args.seed * 1000 + j):
            queries.append(_png(copy))
            answers.append(name)
    print(f"{len(originals)} photographs ({', '.join(originals)}), {len(distractors)} synthetic distractors, "
          f"{len(queries)} edited copies as queries", flush=True)
    out: dict[str, Any] = {"photos": list(originals), "distractors": len(distractors), "queries": len(queries),
                           "model": args.model}
    tmp = tempfile.mkdtemp(dir=args.tmp)
    emb = load_embedder(spec, engine=args.engine, threads=args.threads)
    out["fp32"], v, q = _retrieval(emb, collection, ids, queries, answers, tmp)
    print(f"self-supervised embedder ({emb.session.engine} fp32): recall@1 {out['fp32']['recall_at_1']:.3f}, "
          f"recall@10 {out['fp32']['recall_at_10']:.3f}", flush=True)
    base = load_embedder(ModelSpec(FACTORY), engine=args.engine, threads=args.threads)  # same net, untrained
    out["untrained"], _, _ = _retrieval(base, collection, ids, queries, answers, tmp)
    print(f"same network untrained (baseline): recall@1 {out['untrained']['recall_at_1']:.3f}", flush=True)
    if args.int8_engine:
        calib = [decode_image(c, emb.input)[None] for c in collection[:64]]
        emb8 = load_embedder(spec, engine=args.int8_engine, precision="int8", threads=args.threads,
                             calibration=calib)
        out["int8"], v8, q8 = _retrieval(emb8, collection, ids, queries, answers, tmp)
        agree = vec.recall(vec.exact_neighbours(v8, q8, 10), vec.exact_neighbours(v, q, 10))
        out["int8"]["neighbours_recall_at_10_vs_fp32"] = agree
        out["int8"]["engine"] = emb8.session.engine
        print(f"INT8 ({args.int8_engine}): recall@1 {out['int8']['recall_at_1']:.3f}; its 10 neighbours of each "
              f"query agree with fp32's at recall@10 {agree:.3f}", flush=True)
    out["pass"] = bool(out["fp32"]["recall_at_1"] >= 0.9 and
                       out.get("int8", {}).get("neighbours_recall_at_10_vs_fp32", 1.0) >= 0.95)
    print("PASS" if out["pass"] else "FAIL", "(recall@1 >= 0.9; INT8 neighbours recall@10 >= 0.95)")
    return out


def cmd_photos(args: argparse.Namespace) -> dict[str, Any]:
    """Write scikit-image's bundled photographs as PNG files (the near-duplicate benchmark's originals)."""
    from effstack._files import atomic_file
    from effstack.search.contrastive import photos

    folder = Path(args.out)
    originals = photos()
    for name, img in originals.items():
        with atomic_file(folder / f"{name}.png") as tmp:
            tmp.write_bytes(_png(img))
    print(f"wrote {len(originals)} photographs to {folder}/")
    return {"folder": str(folder), "photos": list(originals)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    v = sub.add_parser("vectors", help="approximate index vs exact on synthetic vectors")
    v.add_argument("--n", type=int, default=1_000_000)
    v.add_argument("--dim", type=int, default=128)
    v.add_argument("--clusters", type=int, default=4096)
    v.add_argument("--spread", type=float, default=1.0, help="noise relative to a centre's norm")
    v.add_argument("--kind", choices=vec.KINDS, help="pin the kind (default: chosen by size)")
    v.add_argument("--recall-target", type=float, default=0.95)
    v.add_argument("--queries", type=int, default=1000)
    v.add_argument("--k", type=int, default=10)
    v.add_argument("--rounds", type=int, default=5)
    v.add_argument("--add-batch", type=int, default=50_000)
    v.add_argument("--build-threads", type=int, default=2)
    v.set_defaults(func=cmd_vectors)
    i = sub.add_parser("images", help="build rate of an image folder and end-to-end query latency")
    i.add_argument("--n", type=int, default=10_000)
    i.add_argument("--folder", default="results/search-images", help="where the generated JPEGs are kept")
    i.add_argument("--model", default="resnet18")
    i.add_argument("--weights")
    i.add_argument("--arch")
    i.add_argument("--input-shape", type=lambda s: tuple(int(x) for x in s.split(",")), default=(3, 224, 224))
    i.add_argument("--engine", default="auto")
    i.add_argument("--precision", default="fp32")
    i.add_argument("--threads", type=int)
    i.add_argument("--batch", type=int, default=32)
    i.add_argument("--queries", type=int, default=200)
    i.add_argument("--rounds", type=int, default=3)
    i.add_argument("--budget-ms", type=float, default=50.0, help="the query's p99 latency budget (default 50 ms)")
    i.set_defaults(func=cmd_images)
    d = sub.add_parser("neardup", help="edited copies of real photographs among distractors")
    d.add_argument("--model", required=True, help="the embedding model (e.g. from effstack train-embedder)")
    d.add_argument("--distractors", type=int, default=1000)
    d.add_argument("--copies", type=int, default=8, help="edited copies per photograph")
    d.add_argument("--engine", default="torch")
    d.add_argument("--int8-engine", default="onnxruntime", help="engine of the INT8 comparison ('' to skip)")
    d.add_argument("--threads", type=int)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_neardup)
    ph = sub.add_parser("photos", help="write the near-duplicate benchmark's photographs to a folder (to train on)")
    ph.add_argument("--out", default="results/photos")
    ph.set_defaults(func=cmd_photos)
    for sp in (v, i, d):
        sp.add_argument("--json", metavar="PATH")
        sp.add_argument("--tmp", default=None, help="folder for temporary indexes")
    args = p.parse_args(argv)
    out = args.func(args)
    if getattr(args, "json", None):
        doc = {"benchmark": f"search {args.what}", "command": ["python", "benchmarks/search.py", *sys.argv[1:]],
               "machine": machine_info(), "versions": library_versions(), "result": out}
        atomic_write_text(args.json, json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
