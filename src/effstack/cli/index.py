"""``effstack index build|add|remove|query|info``: a similarity index of an image collection or of texts.

'build' embeds every image under --images with MODEL, or a ladder bundle folder run with its own engine,
precision and threads (default layer: the pooled features before the classifier) and writes the index to
--out; run it again after an interruption and it carries on where it stopped (images already indexed are
skipped). --images may also be a photos: spec (real photographs and their edited copies, written into
INDEX/photos/). With --texts FILE|DIR|builtin and a text encoder as MODEL (all-minilm-l6-v2 or a Hugging Face
folder) it builds a semantic text index instead, and 'query INDEX "some words"' searches it. An INT8 build
calibrates on a sample of what it indexes, or of --calibration. The other actions load the model the index
records.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import add_model_options, model_spec_from_args


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, change and query an image- or text-similarity index",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = isub.add_parser("build", help="embed a folder of images (or texts) into a new (or interrupted) index")
    add_model_options(b)
    what = b.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", metavar="DIR", help="folder of images (searched recursively), or a "
                      "photos: spec such as 'photos:all?n=16' (its variants are written into INDEX/photos/)")
    what.add_argument("--texts", metavar="FILE|DIR|builtin", help="texts for a text encoder MODEL: a .txt/.md file "
                      "(one text per paragraph), a .jsonl file ('text' fields), a folder of those, or 'builtin' "
                      "(the Python standard library's reference prose and docstrings)")
    b.add_argument("--out", required=True, metavar="INDEX", help="the index folder to write")
    b.add_argument("--layer", help="layer to embed from (default: pooled features before the classifier; "
                   "'output': the model's output)")
    b.add_argument("--kind", choices=["flat", "hnsw", "ivf", "ivfpq"],
                   help="pin the index kind (default: chosen by size)")
    b.add_argument("--recall-target", type=float, default=0.95, help="recall@10 an approximate index is tuned to")
    b.add_argument("--calibration", metavar="IMAGES", help="INT8 calibration images: a folder or a photos: spec; "
                   "with --texts, texts as --texts takes them (default: a sample of what is being indexed)")
    b.add_argument("--calibration-samples", type=int, metavar="N",  # default: search.sources.CALIBRATION_SAMPLES
                   help="images INT8 calibration takes, spread evenly over them (default 32)")
    b.add_argument("--knob", action="append", metavar="KEY=VALUE", help="an engine setting, recorded in the index "
                   "(repeatable; ENGINE.KEY=VALUE for one engine), e.g. openvino.keep_float=first,depthwise")
    _add_run_options(b, default_engine="auto")  # auto: a bundle's own engine, else the best one installed
    b.add_argument("--ray", action="store_true", help="decode and embed on a local Ray cluster (127.0.0.1): Ray Data "
                   "actors, one per instance of a bundle's plan, sharing --threads (needs the ray extra)")
    b.add_argument("--actors", type=int, metavar="N", help="--ray: actor pool size (default: the bundle's instances)")
    b.set_defaults(func=cmd_build)

    a = isub.add_parser("add", help="add images (files or folders) to an index")
    a.add_argument("index", metavar="INDEX")
    a.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders; ids are paths inside a "
                   "folder, or file names")
    _add_run_options(a)
    a.set_defaults(func=cmd_add)

    r = isub.add_parser("remove", help="remove images from an index by id")
    r.add_argument("index", metavar="INDEX")
    r.add_argument("ids", nargs="+", metavar="ID")
    r.set_defaults(func=cmd_remove)

    q = isub.add_parser("query", help="the images (or texts) nearest an image, a text or a stored id")
    q.add_argument("index", metavar="INDEX")
    q.add_argument("image", nargs="?", metavar="IMAGE|TEXT", help="the query image file; for a text index, the "
                   "query text")
    q.add_argument("--id", help="search by a stored item's id instead")
    q.add_argument("--model", help="text index: embed the query with this model (it must be the one that built "
                   "the index; default: the model the index records)")
    q.add_argument("-k", type=int, default=10, help="neighbours to return (default 10)")
    q.add_argument("--json", metavar="PATH", help="write the hits as JSON ('-': standard output)")
    _add_run_options(q)
    q.set_defaults(func=cmd_query)

    i = isub.add_parser("info", help="size, kind, tuning and model of an index")
    i.add_argument("index", metavar="INDEX")
    i.add_argument("--ids", action="store_true", help="also list every id")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("train-embedder", help="train an image embedder by contrastive self-supervision (no labels)",
                       description="Train a small CNN so that crops, flips, colour changes and JPEG recompression "
                       "of an image embed close to it (SimCLR's NT-Xent), on synthetic photos and any unlabelled "
                       "images in --images. Writes a state dict for the model "
                       "effstack.search.contrastive:embedder_net.")
    t.add_argument("--out", required=True, metavar="PATH", help="where to write the weights (.pt)")
    t.add_argument("--images", metavar="DIR", help="unlabelled images to train on as well")
    t.add_argument("--images-share", type=float, default=0.25,
                   help="fraction of each batch drawn from --images (default 0.25)")
    t.add_argument("--synthetic", type=int, default=4000, help="synthetic photos in the training pool (default 4000)")
    t.add_argument("--steps", type=int, default=400, help="optimiser steps (default 400)")
    t.add_argument("--batch", type=int, default=64, help="images per step, two views each (default 64)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 0.002)")
    t.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature (default 0.2)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", metavar="PATH", help="write the training summary as JSON")
    t.set_defaults(func=cmd_train_embedder)


def _add_run_options(p: argparse.ArgumentParser, default_engine: str | None = None) -> None:
    p.add_argument("--engine", default=default_engine, help="engine computing embeddings (default auto)")
    p.add_argument("--precision", help="fp32 or int8 (default fp32, or what the index was built with)")
    p.add_argument("--threads", type=int, help="compute threads (default: all cores)")
    p.add_argument("--batch", type=int, default=32, help="images (or texts) per engine call (default 32)")


def _progress(total: int, unit: str = "img") -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rich.console import Console

    return Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TextColumn(f"{{task.speed}} {unit}/s"),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=False,
                    disable=not sys.stderr.isatty() or total == 0)


def index_images(index: Any, embedder: Any, items: list[tuple[str, Path]]) -> tuple[int, list[str]]:
    """Embed and add ``(id, path)`` items batch by batch (each batch acknowledged when added).

    Returns the number added and a line per unreadable image.
    """
    errors: list[str] = []
    added = 0
    by_path = {p: i for i, p in items}
    with _progress(len(items)) as bar:
        task = bar.add_task("embed", total=len(items))
        for paths, vectors in embedder.embed_paths([p for _, p in items], lambda p, e: errors.append(str(e))):
            added += index.add([by_path[p] for p in paths], vectors, [str(p) for p in paths])
            bar.update(task, completed=added + len(errors))
    return added, errors


def _report(added: int, skipped: int, errors: list[str], seconds: float, index: Any) -> None:
    for line in errors[:5]:
        print(f"effstack: warning: skipped {line}", file=sys.stderr)
    if len(errors) > 5:
        print(f"effstack: warning: ... and {len(errors) - 5} more unreadable images", file=sys.stderr)
    rate = added / seconds if seconds > 0 else 0.0
    print(f"indexed {added} images in {seconds:.1f} s ({rate:.1f} images/s); {skipped} already there, "
          f"{len(errors)} unreadable")
    info = index.info()
    tuned = f", {info['tuning']['param']}={info['tuning']['value']} (recall@10 {info['tuning']['recall']:.3f})" \
        if info["tuning"]["param"] else ""
    print(f"index {info['path']}: {info['count']} images, {info['kind']}{tuned}")


def cmd_build(args: argparse.Namespace) -> int:
    from ..search import Index, list_images, load_embedder
    from ..search.sources import CALIBRATION_SAMPLES, PHOTOS_FOLDER, Calibration, is_photos, write_photos

    if args.texts is not None:
        return _build_texts(args)
    if args.ray:
        from ..deploy.cluster import require_ray

        require_ray("data", "effstack index build --ray")  # before any image is read or model loaded
    out = Path(args.out).expanduser()
    photos = is_photos(args.images)
    images = None if photos else list_images(args.images)  # a wrong folder fails before the model loads
    samples = CALIBRATION_SAMPLES if args.calibration_samples is None else args.calibration_samples
    calibration = Calibration(args.calibration or args.images, samples)
    load_args = {"model": model_spec_from_args(args), "layer": args.layer, "engine": args.engine,
                 "precision": args.precision, "threads": args.threads, "batch": args.batch,
                 "knobs": _engine_knobs(args.knob, args.engine)}
    embedder = load_embedder(**load_args, calibration=calibration)
    if embedder.note:
        print(f"effstack: note: {embedder.note}", file=sys.stderr)
    try:
        if (out / "manifest.json").exists():
            index = Index.open(out, writable=True, fingerprint=embedder.fingerprint)
            print(f"resuming {out}: {len(index)} images already indexed")
        else:
            index = Index.create(out, embedder.describe(), embedder.dim, args.kind, args.recall_target)
        with index:
            if images is None:  # a photos: spec, written into the index once
                root = write_photos(args.images, out / PHOTOS_FOLDER, embedder.input)
                images = list_images(root)
                print(f"{len(images)} photos of {args.images} in {root}")
            else:
                root = Path(args.images).expanduser()  # as list_images gave the paths (a relative one too)
            items = [(p.relative_to(root).as_posix(), p.resolve()) for p in images]
            todo = [(i, p) for i, p in items if i not in index]
            t0 = time.perf_counter()
            with _spread(args, embedder, load_args) as source:
                added, errors = index_images(index, source, todo)
            seconds = time.perf_counter() - t0
            index.checkpoint()
            _report(added, len(items) - len(todo), errors, seconds, index)
    finally:
        embedder.close()
    return 0


def index_texts(index: Any, embedder: Any, ids: list[str], texts: list[str]) -> int:
    """Embed and add texts (the text stored as each entry's path) a window at a time, each window acknowledged
    when added; returns the number added."""
    added = 0
    with _progress(len(texts), "texts") as bar:
        task = bar.add_task("embed", total=len(texts))
        for chunk_ids, chunk, vectors in embedder.embed_windows(ids, texts):
            added += index.add(chunk_ids, vectors, chunk)
            bar.update(task, completed=added)
    return added


def _build_texts(args: argparse.Namespace) -> int:
    """``index build MODEL --texts SOURCE``: a text index (ids are the texts' positions in the corpus)."""
    from ..errors import ConfigError
    from ..search import Index
    from ..search.sources import CALIBRATION_SAMPLES
    from ..search.text import BUILTIN, load_corpus, load_text_embedder

    for flag, given in (("--layer", args.layer), ("--ray", args.ray), ("--actors", args.actors)):
        if given:
            raise ConfigError(f"{flag} is for image indexes; leave it out with --texts")
    out = Path(args.out).expanduser()
    corpus = load_corpus(args.texts)  # a wrong path fails before the model loads
    samples = CALIBRATION_SAMPLES if args.calibration_samples is None else args.calibration_samples
    if samples < 1:
        raise ConfigError(f"--calibration-samples must be at least 1, got {samples}")
    source = args.calibration or args.texts
    calibration = {"source": source if source == BUILTIN else str(Path(source).expanduser().resolve()),
                   "samples": samples}
    embedder = load_text_embedder(model_spec_from_args(args), args.engine, args.precision, args.threads, args.batch,
                                  calibration if args.precision == "int8" else None,
                                  _engine_knobs(args.knob, args.engine))
    data = {**corpus.describe(), "ids": "position"}
    try:
        if (out / "manifest.json").exists():
            index = Index.open(out, writable=True, fingerprint=embedder.fingerprint)
            if index.data.get("fingerprint") != corpus.fingerprint:
                index.close(checkpoint=False)
                raise ConfigError(f"{str(out)!r} was built from other texts ({index.data.get('source', '?')}, "
                                  f"fingerprint {index.data.get('fingerprint', '?')}); give the same --texts to "
                                  "resume, or a new --out")
            print(f"resuming {out}: {len(index)} texts already indexed")
        else:
            index = Index.create(out, embedder.describe(), embedder.dim, args.kind, args.recall_target, data=data)
        with index:
            ids = [str(i) for i in range(len(corpus))]
            todo = [i for i, name in enumerate(ids) if name not in index]
            t0 = time.perf_counter()
            added = index_texts(index, embedder, [ids[i] for i in todo], [corpus.texts[i] for i in todo])
            seconds = time.perf_counter() - t0
            index.checkpoint()
            rate = added / seconds if seconds > 0 else 0.0
            print(f"indexed {added} texts in {seconds:.1f} s ({rate:.1f} texts/s, {embedder.padding_share:.0%} of "
                  f"tokens run were padding); {len(ids) - len(todo)} already there")
            info = index.info()
            print(f"index {info['path']}: {info['count']} texts of {corpus.source} (fingerprint "
                  f"{corpus.fingerprint}), {info['kind']}, {info['dim']} values per text")
    finally:
        embedder.close()
    return 0


@contextlib.contextmanager
def _spread(args: argparse.Namespace, embedder: Any, load_args: dict[str, Any]) -> Iterator[Any]:
    """What embeds the images: the embedder itself, or with --ray Ray Data actors on a local cluster."""
    if not args.ray:
        yield embedder
        return
    from ..deploy.cluster import local_ray
    from ..deploy.embed import RayEmbedPaths, actors_for

    source = RayEmbedPaths(embedder, load_args, actors_for(load_args["model"], args.actors))
    print(f"embedding on {source.actors} Ray actor(s) of {source.num_cpus} CPU(s)", flush=True)
    with local_ray():
        yield source


def _engine_knobs(items: list[str] | None, engine: str) -> dict[str, Any] | None:
    """``--knob`` values for the build's engine: the shared ones and those under its name."""
    from ..engines import ENGINES, canonical
    from ..engines import auto_engine
    from .common import parse_knobs

    if not items:
        return None
    knobs = parse_knobs(items)
    name = canonical(auto_engine(engine))
    shared = {k: v for k, v in knobs.items() if not (isinstance(v, dict) and k in ENGINES.names())}
    return {**shared, **knobs.get(name, {})} or None


def _embedder_for(index: Any, args: argparse.Namespace) -> Any:
    from ..search.embed import embedder_from_manifest
    from ..search.sources import index_sample

    if index.modality == "text":
        from ..search.text import check_same_model, load_text_embedder, text_embedder_from_manifest

        if getattr(args, "model", None) is None:
            return text_embedder_from_manifest(index.model, index.dim, args.engine or "auto", args.precision,
                                               args.threads, args.batch)
        emb = load_text_embedder(args.model, args.engine or "auto", args.precision, args.threads, args.batch)
        try:
            check_same_model(index.model, index.dim, emb, f"--model {args.model!r}")
        except BaseException:
            emb.close()
            raise
        return emb

    return embedder_from_manifest(index.model, args.engine or "auto", args.precision, args.threads, args.batch,
                                  index_sample(index))


def _expand(sources: list[str]) -> list[tuple[str, Path]]:
    from ..search import list_images

    items: list[tuple[str, Path]] = []
    for s in sources:
        path = Path(s).expanduser()
        if path.is_dir():
            items += [(p.relative_to(path).as_posix(), p.resolve()) for p in list_images(path)]
        elif path.is_file():
            items.append((path.name, path.resolve()))
        else:
            raise InputError(f"{s!r} is neither an image file nor a folder; check the path")
    return list(dict(items).items())  # one entry per id: the last one given wins


def cmd_add(args: argparse.Namespace) -> int:
    from ..search import Index

    items = _expand(args.images)
    with Index.open(args.index, writable=True) as index:
        if index.modality == "text":
            raise InputError(f"{args.index!r} is a text index; add texts through the search service (POST "
                             "/search/texts), or rebuild it with 'effstack index build MODEL --texts ...'")
        embedder = _embedder_for(index, args)
        try:
            t0 = time.perf_counter()
            added, errors = index_images(index, embedder, items)
            _report(added, 0, errors, time.perf_counter() - t0, index)
        finally:
            embedder.close()
    return 0 if added or not items else 1


def cmd_remove(args: argparse.Namespace) -> int:
    from ..search import Index

    with Index.open(args.index, writable=True) as index:
        n = index.remove(args.ids)
        missing = len(set(args.ids)) - n
        print(f"removed {n} images" + (f"; {missing} ids were not in the index" if missing else "")
              + f"; {len(index)} remain")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from ..search import Index

    if (args.image is None) == (args.id is None):
        raise InputError("give either a query IMAGE (a TEXT for a text index) or --id ID, not both or neither")
    if args.k < 1:
        raise InputError(f"-k must be at least 1, got {args.k}")
    index = Index.open(args.index)
    if args.model is not None and index.modality != "text":
        raise InputError("--model is for text indexes; an image index is queried with the model it records")
    if index.modality == "text" and args.image is not None:
        from ..search.text import check_query_text

        check_query_text(args.image)  # before the model loads
    t0 = time.perf_counter()
    if args.id is not None:
        hits = index.search_id(args.id, args.k)
        embed_ms = 0.0
    else:
        embedder = _embedder_for(index, args)
        try:
            t0 = time.perf_counter()
            if index.modality == "text":
                q = embedder.embed_texts([args.image])
            else:
                q = embedder.embed_images([Path(args.image).expanduser()])
            embed_ms = (time.perf_counter() - t0) * 1e3
            hits = index.search(q, args.k)[0]
        finally:
            embedder.close()
    total_ms = (time.perf_counter() - t0) * 1e3
    doc = {"query": args.id or args.image, "k": args.k, "took_ms": round(total_ms, 3),
           "embed_ms": round(embed_ms, 3), "hits": [h.to_dict() for h in hits]}
    if args.json == "-":
        print(json.dumps(doc, indent=1))
        return 0
    for rank, h in enumerate(hits, 1):
        shown = h.path if len(h.path) <= 200 or index.modality != "text" else h.path[:199] + "…"
        print(f"{rank:3d}  {h.score:7.4f}  {h.id}  {shown}")
    step = "tokenize + embed" if index.modality == "text" else "decode + embed"
    print(f"{len(hits)} hits in {total_ms:.1f} ms ({step} {embed_ms:.1f} ms)")
    if args.json:
        from ..report.jsonio import atomic_write_text

        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..search import Index

    index = Index.open(args.index)
    info = index.info()
    if args.ids:
        info["ids"] = index.ids
    print(json.dumps(info, indent=1))
    return 0


def cmd_train_embedder(args: argparse.Namespace) -> int:
    from ..search.contrastive import FACTORY, ContrastiveConfig, train_embedder

    config = ContrastiveConfig(steps=args.steps, batch=args.batch, lr=args.lr, temperature=args.temperature,
                               synthetic=args.synthetic, images=args.images, images_share=args.images_share,
                               seed=args.seed)
    every = max(1, args.steps // 20)

    def on_step(step: int, loss: float) -> None:
        if step % every == 0 or step == args.steps:
            print(f"step {step}/{args.steps}  loss {loss:.3f}", flush=True)

    summary = train_embedder(config, args.out, on_step)
    print(f"trained in {summary['seconds']:.0f} s: loss {summary['loss_first10']:.3f} -> {summary['loss_last10']:.3f} "
          f"(chance {summary['chance_loss']:.3f}); wrote {summary['out']}")
    print(f"use it: effstack index build {FACTORY} --weights {summary['out']} --images DIR --out INDEX")
    if args.json:
        from ..report.jsonio import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=1) + "\n")
    return 0
