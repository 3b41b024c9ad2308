"""``effstack cascade SMALL BIG --data DATA``: the small model answers when confident, else the big model.

Both models run on DATA (each with its own input size: DATA is read once per model when they differ). The
samples are split into a calibration and a test half (whole groups of variants of one source photo on one
side, when the data names groups); the confidence threshold is chosen on the calibration half so the cascade
loses at most --max-drop points against the big model, and judged on the test half. Cost per 1,000 queries
comes from each model's best measured throughput on this machine (escalated queries batched separately for the
big model; the small model runs on every query), and in GMAC. Accuracy is top-1 against the data's labels, or
top-1 agreement with the big model when the data has none (or with --agreement).

--distill-epochs first fine-tunes the small model on the big model's outputs over --train-data (unlabelled
images, read at the big model's input; the small model keeps its own side behind a resize, or runs at
--small-size). When both specs are photos: specs of the same photographs, the edits of the photos on the test
side are left out of training, so the test judges the student on photographs it has never seen.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .common import int_list


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cascade", help="small model when confident, else big: accuracy and cost per 1,000 queries",
                       description="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None)
    p.add_argument("small", help="the small model: a name (efficientnet_lite0), a file, or package.module:factory")
    p.add_argument("big", help="the big model, in the same forms")
    p.add_argument("--data", required=True, help="an .npz file (x, optional y and groups), an image folder, or a "
                   "photos: spec (e.g. photos:all?n=8; its variants of one photo stay on one side of the split)")
    p.add_argument("--max-drop", default="0.5", help="points the cascade may lose vs the big model (default 0.5)")
    p.add_argument("--metric", default="maxprob", choices=["maxprob", "margin"],
                   help="the small model's confidence: top softmax probability, or top-1 minus top-2")
    p.add_argument("--engine", default="auto", help="engine to run and time both models (default auto: the best "
                                                      "installed of openvino, onnxruntime, torch)")
    p.add_argument("--calibration", type=float, default=0.5, help="share of samples (groups) to calibrate on")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/test split (default 0)")
    p.add_argument("--agreement", action="store_true", help="score agreement with the big model even with labels")
    p.add_argument("--batches", type=int_list, default=[1, 8, 32], help="batches to time (default 1,8,32)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per batch size (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per batch size (default 3)")
    p.add_argument("--threads", type=int, help="compute threads (default: all cores)")
    p.add_argument("--speedup-goal", type=float, default=2.0, help="cheaper than the big model by this (default 2)")
    p.add_argument("--distill-epochs", type=int, default=0, help="fine-tune the small model on the big model's "
                   "outputs for this many epochs first (default 0: the small model as given)")
    p.add_argument("--train-data", help="unlabelled images to distill on (e.g. photos:all?n=24&split=train); "
                   "edits of test-side photos are left out")
    p.add_argument("--small-size", type=int, help="the side the small model runs at, resized inside the model from "
                   "the big model's input (default: its own side; implied by --distill-epochs)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--html", metavar="PATH", help="write the result and the threshold curve as an HTML page")
    p.set_defaults(func=cmd_cascade)


def _read(data: str, model: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(x, y, groups)`` of DATA prepared for ``model``'s input; groups (the source photo of each sample) from a
    ``photos:`` spec or an .npz's ``groups`` array, else None."""
    from .quantize import load_data

    if data.startswith("photos:"):  # load_data drops the groups the split needs
        from ..data.photos import photo_arrays
        from ..data.spec import parse_data_spec

        x, y, groups = photo_arrays(data, model.input)
        y = y if parse_data_spec(data).options.get("labels") == "reference" else None  # as load_data scores them
    else:
        got = load_data(data, model.input)
        if got is None:
            raise InputError("a cascade needs real data (an .npz, an image folder or photos:), not 'synthetic': "
                             "agreement on random inputs says nothing")
        x, y, groups = (tuple(got) + (None,))[:3]
        path = Path(data).expanduser()
        if groups is None and path.is_file() and path.suffix == ".npz":
            with np.load(path) as z:
                groups = z["groups"] if "groups" in z else None
    if tuple(x.shape[1:]) != tuple(model.input.shape):
        raise InputError(f"data {data!r} holds inputs of shape {tuple(x.shape[1:])} but {model.name} takes "
                         f"{tuple(model.input.shape)}; give data each model can be fed at its size (an image folder "
                         "or photos:)")
    return x, y, groups


def _reference(args: argparse.Namespace, y_small: Any, y_big: Any) -> tuple[np.ndarray | None, str | None]:
    """What to score against, and how to say so: ``(labels or None for agreement with the big model, scored_as)``.

    A ``photos:`` spec's ``labels=reference`` are another model's top-1 (agreement labels): when that model is the
    big one, agreement with the big model as run here is the same measure without a second run; otherwise the
    labels made at the big model's size are used and named."""
    if args.agreement or y_big is None:
        return None, None
    if args.data.startswith("photos:"):
        from ..data.spec import parse_data_spec

        ref = str(parse_data_spec(args.data).options.get("reference", "efficientnet_lite2"))
        return (None, None) if ref == args.big else (y_big, f"top-1 agreement with {ref}'s labels")
    if y_small is None or len(y_small) != len(y_big) or not np.array_equal(y_small, y_big):
        raise InputError(f"data {args.data!r} gave different labels at the two models' sizes; "
                         "give data that reads the same at every size")
    return y_big, None


def _same_input(a: Any, b: Any) -> bool:
    return (a.shape, a.mean, a.std, a.dtype) == (b.shape, b.mean, b.std, b.dtype)


def _logits(model: Any, engine: str, x: np.ndarray, threads: int | None) -> np.ndarray:
    from ..engines import SessionOptions, get_engine
    from ..engines.base import run_batches

    with get_engine(engine).load(model, SessionOptions("fp32", threads, 8)) as session:
        return run_batches(session, x, chunk=32)


def _check_student_args(args: argparse.Namespace) -> None:
    if args.distill_epochs < 0:
        raise InputError(f"--distill-epochs must be 0 or more, got {args.distill_epochs}; e.g. 3")
    if args.small_size is not None and args.small_size < 8:
        raise InputError(f"--small-size must be a side of at least 8 pixels, got {args.small_size}; e.g. 192")
    if args.distill_epochs and not args.train_data:
        raise InputError("--distill-epochs needs --train-data: unlabelled images to distill on, e.g. "
                         "--train-data 'photos:all?n=24&split=train'")
    if args.train_data and not args.distill_epochs:
        raise InputError("--train-data is only read to distill; add --distill-epochs N (e.g. 3)")


def _held_out(args: argparse.Namespace, train_groups: Any, groups: Any, test: np.ndarray) -> np.ndarray | None:
    """A mask over the training samples keeping those of photos not on the test side, or None when the two data
    sets do not name the same photographs (then the user keeps them apart)."""
    from ..data.photos import same_photos

    if train_groups is None or groups is None or not same_photos(args.data, args.train_data):
        return None
    return ~np.isin(train_groups, np.unique(groups[test]))


def _student(args: argparse.Namespace, small: Any, big: Any, groups: Any,
             test: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The small model made to take the big model's input (at ``--small-size``), distilled from the big one on
    ``--train-data`` when ``--distill-epochs`` asks: ``(LoadedModel, what was done)``."""
    from ..ladder.pipeline import adapted_student, distill_student
    from ..models import from_module

    if not args.distill_epochs:
        _, module = adapted_student(small, big.input, args.small_size)
        return from_module(module, big.input, f"{small.name}@{args.small_size}"), \
            {"epochs": 0, "runs_at": [args.small_size] * 2}
    xt, _, gt = _read(args.train_data, big)
    keep = _held_out(args, gt, groups, test)
    left_out = None if keep is None else int((~keep).sum())
    if keep is not None:
        xt = xt[keep]
    if len(xt) == 0:
        raise InputError(f"--train-data {args.train_data!r} holds no image of a calibration-side photo; give more "
                         "photos (e.g. photos:all) or a larger --calibration share")
    print(f"distilling {small.name} from {big.name} on {len(xt)} images, {args.distill_epochs} epoch(s)"
          + ("" if keep is None else f" ({left_out} edits of test-side photos left out)"), flush=True)
    out, info = distill_student(big, small, xt, epochs=args.distill_epochs, student_size=args.small_size,
                                name=f"{small.name}-distilled")
    info.update(train_data=args.train_data, held_out=left_out, test_photos_unseen=keep is not None)
    return out, info


def run(args: argparse.Namespace) -> tuple[dict[str, Any], Any, Any]:
    """Load, run, split, choose, time and judge: ``(the JSON document, CascadeResult, ThresholdChoice)``."""
    from ..engines import canonical
    from ..evaluate.accuracy import parse_max_drop
    from ..evaluate.cascade import choose_threshold, evaluate_cascade, measure_cost, split_calibration
    from ..models import load_model
    from ..engines import auto_engine

    max_drop = parse_max_drop(args.max_drop)  # a bad value fails before any model loads
    _check_student_args(args)
    engine = canonical(auto_engine(args.engine))
    small, big = load_model(args.small), load_model(args.big)
    student = None
    if args.distill_epochs or args.small_size:  # the small model takes the big one's input from here on
        xb, yb, groups = _read(args.data, big)
        cal, test = split_calibration(len(xb), groups, args.calibration, args.seed)
        small, student = _student(args, small, big, groups, test)
        xs, ys = xb, yb
    else:
        xs, ys, groups = _read(args.data, small)
        xb, yb, groups_b = (xs, ys, groups) if _same_input(small.input, big.input) else _read(args.data, big)
        if len(xb) != len(xs) or (groups is None) != (groups_b is None) or \
                (groups is not None and not np.array_equal(groups, groups_b)):
            raise InputError(f"data {args.data!r} gave different samples at the two models' sizes "
                             f"({len(xs)} and {len(xb)}); give data that reads the same at every size")
        cal, test = split_calibration(len(xs), groups, args.calibration, args.seed)
    reference, scored_as = _reference(args, ys, yb)
    ls, lb = _logits(small, engine, xs, args.threads), _logits(big, engine, xb, args.threads)
    pick = lambda a, idx: None if a is None else a[idx]  # noqa: E731
    choice = choose_threshold(ls[cal], lb[cal], pick(reference, cal), max_drop, args.metric, scored_as)
    costs = [measure_cost(m, engine, args.batches, args.seconds, args.repeats, args.threads) for m in (small, big)]
    result = evaluate_cascade(ls[test], lb[test], pick(reference, test), choice, *costs, scored_as=scored_as)
    speedup = result.speedup()
    met = speedup is not None and speedup >= args.speedup_goal and result.drop <= max_drop.allowed(result.big_accuracy)
    doc = {
        "small": small.name, "big": big.name, "data": args.data, "student": student, "engine": engine,
        "metric": args.metric, "scored_as": result.scored_as, "max_drop": str(max_drop),
        "split": {"calibration": len(cal), "test": len(test), "grouped": groups is not None, "seed": args.seed,
                  "groups": None if groups is None else int(len(np.unique(groups)))},
        "calibration": choice.to_dict(), "test": result.to_dict(), "rows": result.rows(),
        "goal": {"speedup_min": args.speedup_goal, "max_drop": str(max_drop), "met": bool(met)},
        "readme": _readme(result, choice, args.speedup_goal, met, student),
    }
    return doc, result, choice


def _student_line(student: dict[str, Any] | None) -> str | None:
    """One line saying how the small model was made to take the big one's input (None: it was not)."""
    if not student:
        return None
    side = "x".join(str(v) for v in student["runs_at"])
    if not student["epochs"]:
        return f"the small model runs at {side} behind a resize from the big model's input, not retrained"
    unseen = (f"the test side's photos unseen (their {student['held_out']} edits left out)"
              if student.get("test_photos_unseen") else "keep the training images apart from --data yourself")
    return (f"the small model distilled from the big one at {side}: {student['epochs']} epoch(s) on "
            f"{student['train_inputs']} images of {student['train_data']} ({student['recipe']}, "
            f"{student['seconds']:.0f} s); {unseen}")


def _readme(result: Any, choice: Any, goal: float, met: bool,
            student: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The ``{"what", "figure", "spread"}`` lines the README's ``figures`` view shows."""
    s, b = result.small_cost, result.big_cost
    spread = (f"throughput range over {s.repeats} rounds: small {s.spread_pct:.0f}% (b{s.batch}), "
              f"big {b.spread_pct:.0f}% (b{b.batch})")
    scored = result.scored_as
    t = "inf (big answers all)" if choice.to_dict()["threshold"] is None else f"{choice.threshold:.4f}"
    made = _student_line(student)
    return ([{"what": "small model", "figure": made, "spread": None}] if made else []) + [
        {"what": f"threshold ({choice.metric}), chosen on {choice.n} calibration samples",
         "figure": f"{t}: small answers {100 * choice.fraction_small:.1f}%, {choice.accuracy:.2f} vs big "
                   f"{choice.big_accuracy:.2f} (max drop {choice.max_drop})", "spread": None},
        {"what": f"{scored} on {result.n} test samples: cascade / small / big",
         "figure": f"{result.accuracy:.2f} / {result.small_accuracy:.2f} / {result.big_accuracy:.2f}",
         "spread": None},
        {"what": "queries escalated to the big model (test)", "figure": f"{100 * result.fraction_escalated:.1f}%",
         "spread": None},
        {"what": f"compute per 1,000 queries on {s.engine}: cascade / big",
         "figure": f"{result.cost('cascade', 'ms'):,.0f} ms / {result.cost('big', 'ms'):,.0f} ms = "
                   f"speed-up {result.speedup():.2f}x", "spread": spread},
        {"what": "GMAC per 1,000 queries: cascade / big",
         "figure": f"{result.cost('cascade', 'gmac'):,.1f} / {result.cost('big', 'gmac'):,.1f} = "
                   f"speed-up {result.speedup(unit='gmac'):.2f}x", "spread": None},
        {"what": f"goal: >= {goal:g}x cheaper (measured time) at <= {choice.max_drop} point(s) lost on test",
         "figure": "met" if met else "not met", "spread": None},
    ]


def _text(doc: dict[str, Any], result: Any, choice: Any) -> str:
    sp, s, b = doc["split"], result.small_cost, result.big_cost
    thr = "inf" if doc["calibration"]["threshold"] is None else f"{choice.threshold:.4f}"
    return "\n".join([
        f"cascade {doc['small']} -> {doc['big']} on {doc['data']}: accuracy is {doc['scored_as']}",
        *([made] if (made := _student_line(doc.get("student"))) else []),
        f"split: {sp['calibration']} calibration / {sp['test']} test samples"
        + (f" ({sp['groups']} groups kept whole)" if sp["grouped"] else "") + f", seed {sp['seed']}",
        f"threshold {thr} ({choice.metric}) on calibration: small answers {100 * choice.fraction_small:.1f}%, "
        f"{choice.accuracy:.2f} vs big alone {choice.big_accuracy:.2f} (max drop {choice.max_drop})",
        "", result.table(), "",
        f"cost: {s.engine} fp32, best measured batch: small b{s.batch} {1 / s.seconds_per_sample:,.1f}/s "
        f"(range {s.spread_pct:.0f}%), big b{b.batch} {1 / b.seconds_per_sample:,.1f}/s (range {b.spread_pct:.0f}%); "
        "the small model runs on every query, escalated queries are batched separately for the big model",
        f"goal >= {doc['goal']['speedup_min']:g}x cheaper at <= {doc['max_drop']} point(s) lost on test: "
        + ("met" if doc["goal"]["met"] else "not met"),
    ])


def _html(doc: dict[str, Any]) -> str:
    from ..report.html import Plot, _page, _table

    c, t = doc["calibration"], doc["test"]
    pts = [(p["fraction_small"] * 100, p["accuracy"]) for p in c["curve"]]
    plot = Plot("Calibration: accuracy against the share the small model answers", "% answered by the small model",
                f"{doc['scored_as']} (points)", [x for x, _ in pts], [y for _, y in pts])
    plot.line(pts, "#1565c0")
    plot.hline(c["big_accuracy"] - c["allowed_drop"], "#c62828", f"big alone - {c['max_drop']}")
    plot.point(c["fraction_small"] * 100, c["accuracy"], "#2e7d32", "chosen threshold")
    cols = ["system", "accuracy", "escalated", "ms / 1,000 queries", "GMAC / 1,000 queries", "speed-up vs big",
            "speed-up (MACs)"]

    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    rows = [[r["system"], f(r["accuracy"], ".2f"), f(None if r["fraction_escalated"] is None
                                                      else 100 * r["fraction_escalated"], ".1f"),
             f(r["ms_per_1000"], ",.0f"), f(r["gmac_per_1000"], ",.1f"), f(r["speedup_vs_big"], ".2f"),
             f(r["speedup_vs_big_macs"], ".2f")] for r in t["rows"]]
    body = (f"<p>{doc['small']} answers when its {doc['metric']} confidence clears the threshold chosen on "
            f"{c['n']} calibration samples; else {doc['big']} answers. Test split: {t['n']} samples; accuracy is "
            f"{doc['scored_as']}. Cost: each model at its best measured batch on {doc['engine']}; escalated queries "
            "batched separately, the small model runs on every query.</p>"
            + _table(cols, rows, numeric=cols[1:]) + plot.svg())
    return _page(f"Cascade: {doc['small']} -> {doc['big']}", body)


def cmd_cascade(args: argparse.Namespace) -> int:
    doc, result, choice = run(args)
    print(_text(doc, result, choice))
    if args.json:
        from .._files import atomic_write_json

        atomic_write_json(args.json, doc, indent=2, default=str)
        print(f"wrote {args.json}")
    if args.html:
        from ..report import atomic_write_text

        atomic_write_text(args.html, _html(doc))
        print(f"wrote {args.html}")
    return 0
