#!/usr/bin/env python
"""Image search on a real embedder: EfficientNet-Lite pooled features over real photographs and their edits.

    nice -n 5 python benchmarks/record.py photo_search -- python benchmarks/photo_search.py --json {json}
    python benchmarks/photo_search.py --quick      # 4 variants a photo, one INT8 build, no lite2: a smoke run

Every index is built by ``effstack index build MODEL --images photos:all?n=16&split=eval`` (in process), so
what is measured is what a user gets:

1. **fp32**: efficientnet_lite0's 1,280 pooled features of each variant (variant 0 TF's eval view, the
   others random crops, flips, colour and JPEG edits; decoded with the model's own view, TF's eval crop).
   Near-duplicate recall@1 and @5: every stored image is a query, itself excluded, and a hit is another edit
   of the same source photo. ``motorcycle_left`` and ``motorcycle_right`` are the two views of one stereo
   pair, kept as two groups by the data set: a neighbour across the pair counts as a miss, and each miss is
   listed so the reader can see which ones they are.
2. **INT8**: the same engine's int8, calibrated on ``photos:all?n=4&split=train`` (other random edits of the
   same photos, never a stored image or a query). Recall@10 of the fp32 neighbours
   (:func:`effstack.evaluate.recall_at_k`: the share of each image's 10 fp32 neighbours that the INT8 index
   also returns) and its own near-duplicate recall@1. On OpenVINO twice: the engine's whole-model int8, and
   with ``--knob openvino.keep_float=first,depthwise`` (the stem and the depthwise convolutions left float:
   on a CPU without VNNI every int8 weight is cut to 7 bits, and those layers lose most to it), and on a CPU
   with BF16 a third time with those float layers in bf16 (``--knob openvino.float_precision=bf16``).
3. **Speed**: embedding throughput of preprocessed batches of ``--batch`` through each session (decoding
   excluded), median and min..max over ``--repeats``; query latency p50/p99 of the index alone
   (``Index.search`` of every stored vector, k=10) and end to end (decode a PNG, embed it at batch 1,
   search), over ``--rounds`` rounds; and the same search served over HTTP by ``effstack serve --index``'s
   search service (on 127.0.0.1) from the last INT8 index, whose top hit must be the image's own photo.
4. **efficientnet_lite2** fp32 (variants made at its own 260 px; ~2x lite0's cost): recall and throughput.

The JSON carries a ``readme`` list of ``{"what", "figure", "spread"}`` rows (the ``figures`` view of
``effstack.report.results``) and every measurement behind them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from effstack.evaluate import cosine_similarity, near_duplicate_recall, recall_at_k
from effstack.hardware import library_versions, machine_info
from effstack.measure.stats import percentile, spread
from effstack.report.jsonio import atomic_write_text
from effstack.search import Index
from effstack.search.embed import decode_image, embedder_from_manifest
from effstack.search.sources import PHOTOS_FOLDER

GOAL_RECALL_1 = 0.95
GOAL_INT8_RECALL_10 = 0.95
KEEP_FLOAT = "openvino.keep_float=first,depthwise"  # the INT8 variant that keeps the stem and depthwise convs float
INT8_KNOBS = {"default": [], "keep_float": [KEEP_FLOAT],  # --int8 name -> index build knobs
              "keep_float_bf16": [KEEP_FLOAT, "openvino.float_precision=bf16"]}  # ... with those float layers bf16


def build(model: str, images: str, out: Path, engine: str, batch: int, precision: str = "fp32",
          calibration: str | None = None, knobs: list[str] | None = None) -> dict[str, Any]:
    """``effstack index build`` in process; its wall time (model load, export, quantization and embedding)."""
    from effstack.cli.main import main

    argv = ["index", "build", model, "--images", images, "--out", str(out), "--engine", engine, "--batch",
            str(batch), "--precision", precision] + (["--calibration", calibration] if calibration else []) \
        + [a for k in knobs or [] for a in ("--knob", k)]
    t0 = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        rc = main(argv)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"effstack {' '.join(argv)} failed (exit {rc}):\n{log.getvalue()}")
    print(f"  effstack {' '.join(argv)}: {seconds:.1f} s", flush=True)
    return {"argv": ["effstack", *argv], "build_s": seconds, "log": log.getvalue().strip().splitlines()}


def stored(out: Path) -> tuple[Index, list[str], np.ndarray, np.ndarray, list[str]]:
    """The index, its ids, vectors (N, dim), the source-photo group of each id, and the group names."""
    ix = Index.open(out)
    ids = sorted(ix.ids)
    vectors = np.stack([ix.vector(i) for i in ids])
    groups_by_id = json.loads((out / PHOTOS_FOLDER / "groups.json").read_text())
    names = sorted({i.split("/")[0] for i in ids})
    groups = np.array([groups_by_id[i] for i in ids], np.int64)
    return ix, ids, vectors, groups, names


def misses(ids: list[str], vectors: np.ndarray, groups: np.ndarray) -> list[str]:
    """``"query -> its nearest other image"`` for each image whose nearest neighbour is another photo's."""
    sim = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    nn = sim.argmax(1)
    return [f"{ids[i]} -> {ids[j]}" for i, j in enumerate(nn) if groups[j] != groups[i]]


def neardup(ids: list[str], vectors: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    out = {"recall_at_1": near_duplicate_recall(vectors, groups, 1) / 100,
           "recall_at_5": near_duplicate_recall(vectors, groups, 5) / 100,
           "misses_at_1": misses(ids, vectors, groups)}
    pair = ("motorcycle_left/", "motorcycle_right/")
    out["stereo_pair_misses"] = sum(all(side.startswith(pair) for side in m.split(" -> ")) for m in out["misses_at_1"])
    print(f"  near-duplicate recall@1 {out['recall_at_1']:.4f}, @5 {out['recall_at_5']:.4f}; misses@1: "
          f"{', '.join(out['misses_at_1']) or 'none'}", flush=True)
    return out


def throughput(emb: Any, x: np.ndarray, repeats: int) -> dict[str, Any]:
    """Images/s of ``emb.embed`` over ``x`` (preprocessed), one warm-up pass, then ``repeats`` timed ones."""
    emb.embed(x[: emb.batch])
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        emb.embed(x)
        rates.append(len(x) / (time.perf_counter() - t0))
    s = spread(rates)
    print(f"  {emb.session.engine} {emb.session.precision} batch {emb.batch}: {s.median:.1f} images/s "
          f"({s.min:.1f}-{s.max:.1f}, n={s.n})", flush=True)
    return {"engine": emb.session.engine, "precision": emb.session.precision, "batch": emb.batch,
            "images": len(x), "images_per_s": s.to_dict()}


def latency(ix: Index, vectors: np.ndarray, emb: Any, queries: list[bytes], rounds: int) -> dict[str, Any]:
    """p50/p99 ms per round: the index alone (every stored vector, k=10), and decode + embed (batch 1) + search."""
    search, e2e = {"p50": [], "p99": []}, {"p50": [], "p99": []}
    emb.embed_images(queries[:1])
    for _ in range(rounds):
        lat = []
        for v in vectors:
            t0 = time.perf_counter_ns()
            ix.search(v, 10)
            lat.append((time.perf_counter_ns() - t0) / 1e6)
        search["p50"].append(percentile(lat, 50))
        search["p99"].append(percentile(lat, 99))
        lat = []
        for q in queries:
            t0 = time.perf_counter_ns()
            ix.search(emb.embed_images([q]), 10)
            lat.append((time.perf_counter_ns() - t0) / 1e6)
        e2e["p50"].append(percentile(lat, 50))
        e2e["p99"].append(percentile(lat, 99))
    out = {f"{what}_{p}_ms": spread(d[p]).to_dict() for what, d in (("search", search), ("e2e", e2e)) for p in d}
    out.update(search_queries=len(vectors), e2e_queries=len(queries), rounds=rounds)
    print(f"  search p50 {out['search_p50_ms']['median']:.3f} ms p99 {out['search_p99_ms']['median']:.3f} ms; "
          f"decode+embed+search p50 {out['e2e_p50_ms']['median']:.1f} ms p99 {out['e2e_p99_ms']['median']:.1f} ms",
          flush=True)
    return out


def served(out: Path, engine: str, queries: list[tuple[str, bytes]]) -> dict[str, Any]:
    """The index behind the search service on 127.0.0.1: the page, and each query's top hit over HTTP."""
    import httpx

    from effstack.search.service import SearchService
    from effstack.serve.app import ServerOptions, create_app
    from effstack.serve.repository import ModelRepository
    from effstack.serve.server import BackgroundServer

    svc = SearchService.open(out, engine=engine)
    try:
        app = create_app(ModelRepository({}), ServerOptions(port=0), extensions=[svc])
        with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            page = client.get("/search")
            info = client.get("/search/info").json()
            right, lat = 0, []
            for image_id, data in queries:
                t0 = time.perf_counter()
                r = client.post("/search/query?k=5", content=data, headers={"Content-Type": "image/png"})
                lat.append((time.perf_counter() - t0) * 1e3)
                r.raise_for_status()
                right += r.json()["hits"][0]["id"].split("/")[0] == image_id.split("/")[0]
            thumb = client.get(f"/search/images/{queries[0][0]}/thumb")
    finally:
        svc.close()
    doc = {"page_status": page.status_code, "page_bytes": len(page.content), "count": info["count"],
           "precision": info["model"].get("precision"), "queries": len(queries), "top1_same_photo": right,
           "thumb_status": thumb.status_code, "http_p50_ms": percentile(lat, 50), "http_max_ms": max(lat)}
    print(f"  served: page {doc['page_status']}, {right}/{len(queries)} HTTP queries' top hit from their own photo, "
          f"p50 {doc['http_p50_ms']:.1f} ms", flush=True)
    return doc


def int8_index(model: str, images: str, out: Path, args: argparse.Namespace, knobs: list[str], ids: list[str],
               v32: np.ndarray, groups: np.ndarray, x: np.ndarray, queries: list[bytes]) -> dict[str, Any]:
    """An INT8 index of the same images: its build, fidelity to the fp32 one, own recall, speed."""
    print(f"{model}: int8 index, calibrated on {args.calibration}" + "".join(f", {k}" for k in knobs), flush=True)
    res: dict[str, Any] = {"knob": " ".join(knobs) or None,
                           "build": build(model, images, out, args.engine, args.batch, "int8", args.calibration, knobs)}
    ix8, ids8, v8, _, _ = stored(out)
    assert ids8 == ids, "the fp32 and int8 indexes hold different images"
    res["calibration"] = ix8.model.get("calibration")
    res["neardup"] = neardup(ids, v8, groups)
    res["recall_at_10_of_fp32"] = recall_at_k(v8, v32, 10) / 100
    res["cosine_to_fp32"] = cosine_similarity(v8, v32)
    print(f"  recall@10 of the fp32 neighbours {res['recall_at_10_of_fp32']:.4f}; mean cosine to fp32 "
          f"{res['cosine_to_fp32']:.4f}", flush=True)
    emb8 = embedder_from_manifest(ix8.model, args.engine, batch=args.batch)  # the recorded calibration again
    res["requery_cosine_min"] = float(np.min(np.sum(emb8.embed(x) * v8[: len(x)], axis=1)))
    res["throughput"] = throughput(emb8, x, args.repeats)
    res["latency"] = latency(ix8, v8, emb8, queries, args.rounds)
    emb8.close()
    ix8.close()
    return res


def one_model(model: str, images: str, root: Path, args: argparse.Namespace, int8: bool) -> dict[str, Any]:
    print(f"{model}: fp32 index", flush=True)
    res: dict[str, Any] = {"model": model, "images": images}
    res["fp32_build"] = build(model, images, root / f"{model}-fp32", args.engine, args.batch)
    ix, ids, v32, groups, names = stored(root / f"{model}-fp32")
    res.update(count=len(ids), photos=names, dim=int(v32.shape[1]), view=ix.model.get("view"))
    res["fp32"] = neardup(ids, v32, groups)
    emb = embedder_from_manifest(ix.model, args.engine, batch=args.batch)
    paths = [ix.path_of(i) for i in ids]
    x = np.stack([decode_image(p, emb.input, emb.view) for p in paths[: args.batch * args.batches]])
    queries = [Path(p).read_bytes() for p in paths[:: max(1, len(paths) // args.queries)][: args.queries]]
    res["fp32_throughput"] = throughput(emb, x, args.repeats)
    res["fp32_latency"] = latency(ix, v32, emb, queries, args.rounds)
    emb.close()
    if int8:
        variants = [(f"int8_{v}" if v != "default" else "int8", INT8_KNOBS[v])
                    for v in args.int8 if v == "default" or args.engine == "openvino"]
        for key, knobs in variants:
            res[key] = int8_index(model, images, root / f"{model}-{key}", args, knobs, ids, v32, groups, x, queries)
        sample = [(ids[i], Path(paths[i]).read_bytes()) for i in range(0, len(ids), max(1, len(ids) // 8))][:8]
        if variants:
            res["served"] = served(root / f"{model}-{variants[-1][0]}", args.engine, sample)
    ix.close()
    return res


def int8_variants(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, result)`` of each INT8 index built: the engine's default, and with convolutions kept float."""
    out = [("INT8", r["int8"])] if "int8" in r else []
    if "int8_keep_float" in r:
        out.append(("INT8 keep_float=first,depthwise", r["int8_keep_float"]))
    if "int8_keep_float_bf16" in r:
        out.append(("INT8 keep_float=first,depthwise, float layers bf16", r["int8_keep_float_bf16"]))
    return out


def passed(r: dict[str, Any]) -> bool:
    """fp32 recall@1 met, and at least one INT8 build met the fp32-neighbour goal."""
    return r["fp32"]["recall_at_1"] >= GOAL_RECALL_1 and any(
        v["recall_at_10_of_fp32"] >= GOAL_INT8_RECALL_10 for _, v in int8_variants(r))


def readme_rows(r0: dict[str, Any], r2: dict[str, Any] | None) -> list[dict[str, str]]:
    """The figures as ``{"what", "figure", "spread"}`` lines (``effstack.report.results``' figures view)."""
    def mark(ok: bool) -> str:
        return "met" if ok else "not met"

    def rate(t: dict[str, Any]) -> dict[str, str]:
        s = t["images_per_s"]
        return {"figure": f"{s['median']:.1f} images/s",
                "spread": f"{s['min']:.1f}-{s['max']:.1f} over {s['n']} repeats"}

    def ms(s: dict[str, Any], digits: int) -> dict[str, str]:
        return {"figure": f"{s['median']:.{digits}f} ms",
                "spread": f"{s['min']:.{digits}f}-{s['max']:.{digits}f} over {s['n']} rounds"}

    def missed(d: dict[str, Any]) -> str:
        return f"{len(d['misses_at_1'])} misses, {d['stereo_pair_misses']} of them across the motorcycle stereo pair"

    f, m, n, eng = r0["fp32"], r0["model"], r0["count"], r0["fp32_throughput"]["engine"]
    rows = [
        {"what": f"{m} fp32 ({eng}), near-duplicate recall@1 over {n} images of {len(r0['photos'])} photos, goal >= "
                 f"{GOAL_RECALL_1}", "figure": f"{f['recall_at_1']:.3f} ({mark(f['recall_at_1'] >= GOAL_RECALL_1)})",
         "spread": missed(f)},
        {"what": f"{m} fp32, near-duplicate recall@5", "figure": f"{f['recall_at_5']:.3f}", "spread": "-"},
    ]
    for label, v in int8_variants(r0):
        ok = v["recall_at_10_of_fp32"] >= GOAL_INT8_RECALL_10
        rows += [
            {"what": f"{m} {label}, recall@10 of the fp32 neighbours, goal >= {GOAL_INT8_RECALL_10}",
             "figure": f"{v['recall_at_10_of_fp32']:.3f} ({mark(ok)})",
             "spread": f"mean cosine to fp32 {v['cosine_to_fp32']:.3f}"},
            {"what": f"{m} {label}, near-duplicate recall@1", "figure": f"{v['neardup']['recall_at_1']:.3f}",
             "spread": missed(v["neardup"])},
        ]
    rows.append({"what": f"{m} fp32 embedding throughput, batch {r0['fp32_throughput']['batch']} (decode excluded)",
                 **rate(r0["fp32_throughput"])})
    for label, v in int8_variants(r0):
        rows.append({"what": f"{m} {label} embedding throughput, batch {v['throughput']['batch']}",
                     **rate(v["throughput"])})
    for label, lat in [("fp32", r0["fp32_latency"])] + [(lb, v["latency"]) for lb, v in int8_variants(r0)]:
        for p in ("p50", "p99"):
            rows.append({"what": f"{m} {label} query {p}: decode + embed (batch 1) + search",
                         **ms(lat[f"e2e_{p}_ms"], 1)})
    for p in ("p50", "p99"):
        rows.append({"what": f"index search alone {p} (flat, {n} vectors, k=10)",
                     **ms(r0["fp32_latency"][f"search_{p}_ms"], 3)})
    if "served" in r0:
        s = r0["served"]
        rows.append({"what": f"search service, {s['precision']} index on 127.0.0.1: top hit from the query's photo",
                     "figure": f"{s['top1_same_photo']}/{s['queries']}",
                     "spread": f"HTTP p50 {s['http_p50_ms']:.1f} ms; page HTTP {s['page_status']}"})
    if r2 is not None:
        f2 = r2["fp32"]
        rows += [
            {"what": f"{r2['model']} fp32 (variants at its 260 px), near-duplicate recall@1 / @5",
             "figure": f"{f2['recall_at_1']:.3f} / {f2['recall_at_5']:.3f}", "spread": missed(f2)},
            {"what": f"{r2['model']} fp32 embedding throughput, batch {r2['fp32_throughput']['batch']}",
             **rate(r2["fp32_throughput"])},
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--quick", action="store_true", help="4 variants a photo, 2 repeats, one INT8 build, no "
                   "efficientnet_lite2")
    p.add_argument("--engine", default="auto", help="engine of both indexes (default auto: openvino if installed)")
    p.add_argument("--variants", type=int, help="variants a photo (default 16; 4 with --quick)")
    p.add_argument("--calibration", default="photos:all?n=4&split=train", help="INT8 calibration images")
    p.add_argument("--int8", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                   help="INT8 builds: default (the engine's whole-model int8), keep_float and keep_float_bf16 "
                   "(OpenVINO only; the latter on CPUs with BF16); default all that run here, keep_float alone with "
                   "--quick")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=3, help="batches per throughput repeat")
    p.add_argument("--repeats", type=int, help="throughput repeats (default 5; 2 with --quick)")
    p.add_argument("--rounds", type=int, help="latency rounds (default 3; 1 with --quick)")
    p.add_argument("--queries", type=int, help="end-to-end queries a round (default 48; 12 with --quick)")
    p.add_argument("--no-lite2", action="store_true", help="skip efficientnet_lite2")
    p.add_argument("--tmp", help="folder for the indexes (default: a temporary one)")
    args = p.parse_args(argv)
    n = args.variants or (4 if args.quick else 16)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.queries = args.queries or (12 if args.quick else 48)
    if not args.int8:
        from effstack.engines.openvino import cpu_has_bf16

        args.int8 = ["keep_float"] if args.quick else ["default", "keep_float"] + \
            (["keep_float_bf16"] if cpu_has_bf16() else [])
    if set(args.int8) - set(INT8_KNOBS):
        p.error(f"--int8 takes {', '.join(INT8_KNOBS)}, got {','.join(args.int8)}")
    if args.engine == "auto":
        from effstack.engines import auto_engine

        args.engine = auto_engine()
    images = f"photos:all?n={n}&split=eval"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        r0 = one_model("efficientnet_lite0", images, Path(tmp), args, int8=True)
        r2 = None if args.quick or args.no_lite2 else one_model("efficientnet_lite2", images, Path(tmp), args,
                                                                int8=False)
    wall = time.perf_counter() - t0
    rows = readme_rows(r0, r2)
    ok = passed(r0)
    width = max(len(r["what"]) for r in rows)
    print()
    for r in rows:
        print(f"{r['what']:<{width}}  {r['figure']:>20}  {r['spread']}")
    verdict = "PASS" if ok else "FAIL"
    if args.quick:  # with 4 variants a photo, 7 of an image's 10 neighbours are other photos: ranks of near-ties
        verdict = f"smoke run, goals not applied (they are for n=16; here they would {'pass' if ok else 'fail'})"
    print(f"\n{verdict} (fp32 recall@1 >= {GOAL_RECALL_1}; an INT8 build's recall@10 of the fp32 neighbours >= "
          f"{GOAL_INT8_RECALL_10}) in {wall:.0f} s")
    if args.json:
        doc = {"benchmark": "photo search", "command": ["python", "benchmarks/photo_search.py", *sys.argv[1:]],
               "images": images, "quick": args.quick, "engine": args.engine, "wall_s": wall, "pass": bool(ok),
               "goals": {"fp32_recall_at_1": GOAL_RECALL_1, "int8_recall_at_10_of_fp32": GOAL_INT8_RECALL_10},
               "readme": rows, "efficientnet_lite0": r0, "efficientnet_lite2": r2,
               "machine": machine_info(), "versions": library_versions()}
        atomic_write_text(args.json, json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
