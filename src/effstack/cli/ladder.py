"""``effstack ladder MODEL --latency-budget 7ms --max-drop 1.0``: stack every technique under a budget.

Rungs: baseline (PyTorch eager, fp32, batch 1) -> batching -> engine -> reduced precision -> INT8 ->
pruning -> distillation (and the student's INT8) -> instances x threads. Each rung is kept only when
accuracy holds against the baseline, p99 meets the budget and the speed-up is real. Prints the ladder;
``--json``, ``--html`` and ``--bundle`` write the result, the report and a folder ``effstack serve`` loads.
Exit status: 0 a configuration meets the budget, 3 none does (the message names the fastest p99 seen),
2 a user mistake.
"""

from __future__ import annotations

import argparse

from .common import add_model_options, model_spec_from_args

EXIT_INFEASIBLE = 3


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ladder", help="climb the efficiency ladder under a latency budget and accuracy tolerance",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    add_model_options(p)
    add_ladder_options(p)
    p.set_defaults(func=cmd_ladder)
    d = sub.add_parser("demo", help="the main job: a real ImageNet model's image-search ladder -> bundle -> index",
                       description="photos (default): EfficientNet-Lite0 with its ImageNet weights as an image "
                                   "embedder, its ladder scored on edited copies of the real photos scikit-image and "
                                   "scikit-learn ship (recall@10 of the fp32 neighbours), a servable bundle and an "
                                   "index of the photos built with it. digits: render synthetic digits, train a "
                                   "teacher on them, climb the whole ladder (pruning and distillation included) "
                                   "scored on the real digits scikit-learn ships.")
    d.add_argument("which", nargs="?", choices=["photos", "digits"], default="photos",
                   help="photos (default): the real-model image-search ladder; digits: the synthetic-data ladder")
    d.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    d.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    d.add_argument("--latency-budget", help="p99 budget (default 10ms)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("--json", metavar="PATH", help="also write the ladder JSON here (besides OUT/ladder.json)")
    d.set_defaults(func=cmd_demo)


def add_ladder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="evaluation data: an .npz (x, y) or an image folder (default: synthetic "
                                  "inputs, accuracy = agreement with fp32)")
    p.add_argument("--train-data", help="training inputs for pruning and distillation, labels optional (.npz, image folder or a data spec)")
    p.add_argument("--student", help="a smaller model to distil into (a spec, like --model); for a text model the "
                                     "student's number of layers (default: half the teacher's)")
    p.add_argument("--seq-len", type=int, help="text models: every text is truncated and padded to "
                   "this many tokens, the length speed is measured at (default 128, or the model's maximum); --data is then a .txt, .md or "
                   ".jsonl file of texts (default: the built-in corpus)")
    p.add_argument("--student-size", type=int, help="the side the student runs at (default: its own; it takes "
                   "the teacher's inputs and resizes them inside the model)")
    p.add_argument("--unlabelled", help="more unlabelled inputs for distillation and pruning's fine-tuning, "
                   "e.g. synth:shapes?n=512 (never scored)")
    p.add_argument("--distill-epochs", type=int, default=10, help="distillation epochs (default 10)")
    p.add_argument("--prune-ratio", type=float, default=0.5, help="MACs the pruning rung keeps (default 0.5)")
    p.add_argument("--latency-budget", default="100ms", help="p99 budget of one batch, e.g. 7ms (default 100ms)")
    p.add_argument("--max-drop", default="1.0", help="allowed accuracy drop: points (1.0) or relative (1%%)")
    p.add_argument("--task", default="classification", choices=["classification", "embedding"],
                   help="what the model outputs: class scores, or an embedding (then every rung's accuracy is "
                        "recall@10 of the fp32 baseline's neighbours, in points)")
    p.add_argument("--min-cosine", type=float, help="embeddings: the INT8 guard also needs this mean cosine "
                   "agreement with the fp32 embeddings, e.g. 0.99 (default: no floor)")
    p.add_argument("--objective", default="throughput", choices=["throughput", "latency", "cost"])
    p.add_argument("--price-per-hour", type=float, help="machine price for the cost column, e.g. 1.20")
    p.add_argument("--min-gain", type=float, default=1.05, help="smallest speed-up a rung must bring (default 1.05)")
    p.add_argument("--engines", default="onnxruntime,openvino", help="engines to try (default onnxruntime,openvino)")
    p.add_argument("--precisions", default="bf16,fp16", help="reduced float precisions to try (default bf16,fp16)")
    p.add_argument("--max-batch", type=int, default=256, help="largest batch the search tries (default 256)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per configuration (default 1)")
    p.add_argument("--time-budget", help="stop starting rungs after this long, e.g. 20m (default: no limit)")
    p.add_argument("--no-prune", action="store_true", help="skip the pruning rung")
    p.add_argument("--json", metavar="PATH", help="write the ladder as JSON")
    p.add_argument("--html", metavar="PATH", help="write the self-contained HTML report")
    p.add_argument("--bundle", metavar="DIR", help="write the chosen configuration as a servable bundle")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def parse_seconds(text: str | None) -> float | None:
    """``"20m"`` -> 1200.0, ``"90s"`` -> 90.0, ``"1h"`` -> 3600.0, ``"300"`` -> 300.0."""
    from ..errors import ConfigError

    if text is None:
        return None
    s = str(text).strip().lower()
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}.get(s[-1:], None)
    try:
        value = float(s[:-1] if scale else s) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"time budget must look like 20m, 90s or 1h, got {text!r}") from None
    if value <= 0:
        raise ConfigError(f"time budget must be positive, got {text!r}")
    return value


def budget_from_args(args: argparse.Namespace):
    from ..ladder import Budget
    from ..serve.config import parse_duration_ms

    return Budget(parse_duration_ms(args.latency_budget), args.max_drop, min_gain=args.min_gain,
                  objective=args.objective, price_per_hour=args.price_per_hour)


def write_outputs(result, args: argparse.Namespace) -> None:
    """Print the ladder and write --json / --html / --bundle as asked."""
    import json

    from ..report import atomic_write_text
    from ..report.html import ladder_html
    from ..report.ladder import print_ladder

    print_ladder(result)
    html = ladder_html(result) if (args.html or args.bundle) else None
    if args.json:
        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    if args.html:
        atomic_write_text(args.html, html)
        print(f"wrote {args.html}")
    if args.bundle and not result.infeasible:
        from ..ladder.bundle import write_bundle

        write_bundle(result, args.bundle, report_html=html)
        print(f"wrote bundle {args.bundle} (serve it with: effstack serve {args.bundle})")


def cmd_ladder(args: argparse.Namespace) -> int:
    from ..cli.quantize import load_data
    from ..ladder.pipeline import LadderData, run_ladder
    from ..models import load_model

    budget = budget_from_args(args)
    if args.min_cosine is not None and not -1.0 <= args.min_cosine <= 1.0:
        from ..errors import ConfigError

        raise ConfigError(f"--min-cosine is a cosine similarity between -1 and 1 (e.g. 0.99), got {args.min_cosine:g}")
    model = load_model(model_spec_from_args(args))
    data = None
    if "text" in model.meta:  # texts in: tokenised and split into held-out evaluation and training texts
        from ..text.data import ladder_data

        data, text_set = ladder_data(model, args.data, seq_len=args.seq_len)
        args.seq_len = text_set.seq_len
    elif args.data:
        ev = load_data(args.data, model.input)
        train = load_data(args.train_data, model.input) if args.train_data else None
        extra = load_data(args.unlabelled, model.input)[0] if args.unlabelled else None
        data = LadderData(ev, train, extra) if ev is not None else None
        _warn_same_photos(args)
    elif args.train_data:
        from ..errors import ConfigError

        raise ConfigError("--train-data needs --data too (the rungs are scored on --data, never on training data)")
    result = run_ladder(model, budget=budget, data=data, student=args.student,
                        engines=tuple(e for e in args.engines.split(",") if e),
                        precisions=tuple(p for p in args.precisions.split(",") if p), seconds=args.seconds,
                        max_batch=args.max_batch, time_budget_s=parse_seconds(args.time_budget),
                        prune=not args.no_prune, progress=not args.quiet, task=args.task,
                        distill_epochs=args.distill_epochs, student_size=args.student_size,
                        prune_ratio=args.prune_ratio, min_cosine=args.min_cosine)
    write_outputs(result, args)
    if args.task == "embedding" or "text" in model.meta:
        from ..ladder.workbench import metric_name

        print(f"accuracy: {metric_name('embedding', False)}"
              + (f"; speed at {args.seq_len} tokens a text" if "text" in model.meta else ""))
    if result.infeasible:
        import sys

        print(f"effstack: {result.infeasible}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


def _warn_same_photos(args: argparse.Namespace) -> None:
    """Say so when the students train on other edits of the photographs the rungs are scored on."""
    from ..data.photos import same_photos

    if any(same_photos(args.data, t) for t in (args.train_data, args.unlabelled)) and \
            (args.student or not args.no_prune):
        import sys

        print("effstack: note: the training images are other edits of the photographs --data scores on, so the "
              "distill and prune rungs are scored on photographs they trained on (effstack cascade "
              "--distill-epochs keeps the test photographs unseen)", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..serve.config import parse_duration_ms

    if args.which == "digits":
        from ..ladder.demo import DemoConfig, run_demo as run
    else:
        from ..ladder.photo_demo import PhotoDemoConfig as DemoConfig, run_photo_demo as run
    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.latency_budget:
        config = replace(config, latency_budget_ms=parse_duration_ms(args.latency_budget))
    result = run(config, args.out, progress=not args.quiet)
    out = args.out.rstrip("/")
    outputs = argparse.Namespace(json=f"{out}/ladder.json", html=f"{out}/report.html", bundle=f"{out}/bundle")
    write_outputs(result, outputs)
    search = None
    if args.which == "photos" and not result.infeasible:
        from ..ladder.photo_demo import index_photos

        search = index_photos(result, f"{out}/bundle", f"{out}/index")
        print(f"index {search['index']}: {search['images']} photos embedded with the bundle in "
              f"{search['embed_seconds']:.1f} s; near-duplicate recall@1 {search['recall_at_1']:.2f} "
              f"(fp32 PyTorch: {search['fp32_recall_at_1']:.2f})")
    if args.json:
        from .._files import atomic_write_json

        atomic_write_json(args.json, {**result.to_dict(), **({"search": search} if search else {})})
    return EXIT_INFEASIBLE if result.infeasible else 0
