#!/usr/bin/env python
"""Teacher-filtered synthetic data: train on the N synthetic digits a real-data teacher likes best, not a random N.

The FineWeb point for images: render a pool of P = ``--pool-factor`` x N synthetic digits
(``synth:digits``, strength 0.5, ``preprocess=optdigits``: the form of scikit-learn's real 8x8 digits, as in
``benchmarks/sim2real.py``), let a teacher score every sample (:func:`effstack.synth.filter_by_teacher`), and
train a student on the kept N. The teacher is the same CNN trained on the real training split
(``sklearn:digits?split=train``, 1200 images); the real test split (597 images) is only ever scored, never
trained or tuned on, by teacher or students. Arms, per seed (the seed picks the pool, the random subset, the
students' initial weights and the loop's shuffling; arms of one seed share the pool and the initial weights):

* ``random``: a random N of the pool (what an unfiltered run of N would train on);
* ``filtered``: the N best of the pool by the teacher's ``--score`` (keep = N/P), over the whole pool;
* ``filtered-balanced``: the same, but the best N/P of each class (``balance=True``).

Same architecture, epochs and optimizer (effstack's training loop) for every student. Reported per arm: real
test top-1, mean and spread over seeds; top-1 per 1,000 training images and per 1,000 rendered images (a
filtered arm renders P to train on N); top-1 per second of student training, and, for the filtered arms, per
second of training plus the teacher's scoring; the kept fraction of each class; and each filtered arm's gain
over ``random`` of the same seed. Settings were fixed before the first run, not tuned on the test split.

    python benchmarks/teacher_filter.py --json results/teacher_filter.json
    python benchmarks/teacher_filter.py --quick            # small and short: checks the script works

Never run as a test: it renders and trains for minutes on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from effstack.data import as_arrays, resolve_data
from effstack.hardware import library_versions, machine_info
from effstack.report.jsonio import atomic_write_text
from effstack.synth import filter_by_teacher
from effstack.testing.trained import _cnn
from effstack.train import TrainConfig, evaluate, fit

ARMS = ("random", "filtered", "filtered-balanced")
REAL_TRAIN, REAL_TEST = "sklearn:digits?split=train", "sklearn:digits?split=test"


@dataclass(frozen=True)
class Settings:
    """One comparison: N training images from a pool of ``pool_factor`` x N, ``seeds`` repeats."""

    n: int = 1200
    pool_factor: int = 4
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30
    teacher_epochs: int = 30
    width: int = 32
    score: str = "margin"
    strength: float = 0.5
    workers: int = 2
    progress: bool = True

    @property
    def pool(self) -> int:
        return self.n * self.pool_factor


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int, width: int, label: str, augment: str,
          progress: bool) -> tuple[Any, float]:
    """A fresh ``_cnn(width)`` (initial weights from ``seed``) trained by ``effstack.train.fit``; (model, seconds)."""
    import torch

    torch.manual_seed(seed)
    model = _cnn(width)
    config = TrainConfig(epochs=epochs, lr=2e-3, batch_size=64, seed=seed, augment=augment, progress=progress)
    return model, fit(model, (x, y), config, label=label).seconds


def _per_class(y_pool: np.ndarray, kept: np.ndarray) -> dict[str, float]:
    return {str(c): round(float((y_pool[kept] == c).sum() / (y_pool == c).sum()), 4) for c in np.unique(y_pool)}


def run_seed(s: Settings, seed: int, teacher: Any, test: tuple[np.ndarray, np.ndarray]) -> list[dict[str, Any]]:
    """The three arms of one seed, as result rows.

    A row: ``top1`` (real test split, points), ``train_s`` (the student's ``fit`` time), ``score_s`` (the
    teacher's scoring time, 0 for ``random``), ``render_s`` (rendering what the arm needs: N of the pool for
    ``random``, all of it otherwise) and ``kept_fraction`` (class -> share of that class's pool samples used).
    """
    spec = (f"synth:digits?n={s.pool}&seed={seed}&size=32&strength={s.strength:g}&workers={s.workers}"
            f"&preprocess=optdigits")
    t0 = time.perf_counter()
    x_pool, y_pool = as_arrays(resolve_data(spec, progress=s.progress))
    render_s = time.perf_counter() - t0
    picks: dict[str, tuple[np.ndarray, float]] = {
        "random": (np.sort(np.random.default_rng([seed, 1]).choice(s.pool, s.n, replace=False)), 0.0)}
    for arm, balance in (("filtered", False), ("filtered-balanced", True)):
        r = filter_by_teacher(teacher, (x_pool, y_pool), keep=s.n / s.pool, score=s.score, balance=balance)
        picks[arm] = (r.indices, r.seconds)
    rows = []
    for arm in ARMS:
        idx, score_s = picks[arm]
        model, train_s = train(x_pool[idx], y_pool[idx], s.epochs, seed, s.width, f"{arm} seed {seed}", "none",
                               s.progress)
        rendered = s.n if arm == "random" else s.pool  # an unfiltered run of N renders only N
        rows.append({"arm": arm, "seed": seed, "pool": spec, "train_samples": int(len(idx)), "rendered": rendered,
                     "epochs": s.epochs, "top1": round(evaluate(model, test), 2), "train_s": round(train_s, 2),
                     "score_s": round(score_s, 3), "render_s": round(render_s * rendered / s.pool, 1),
                     "kept_fraction": _per_class(y_pool, idx)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "kept_fraction"}), file=sys.stderr)
    return rows


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(values), 2), "sd": round(statistics.stdev(values), 2) if len(values) > 1
            else 0.0, "min": min(values), "max": max(values)}


def summarize(rows: list[dict[str, Any]], s: Settings) -> list[dict[str, Any]]:
    """One summary per arm: top-1 spread, the efficiency figures, kept fractions, and the gain over random."""
    out = []
    random_by_seed = {r["seed"]: r["top1"] for r in rows if r["arm"] == "random"}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        top1 = statistics.mean(r["top1"] for r in mine)
        train_s = statistics.mean(r["train_s"] for r in mine)
        score_s = statistics.mean(r["score_s"] for r in mine)
        fractions = {c: [r["kept_fraction"][c] for r in mine] for c in mine[0]["kept_fraction"]}
        out.append({
            "arm": arm, "seeds": len(mine), "train_samples": s.n, "rendered": mine[0]["rendered"],
            "top1": _spread([r["top1"] for r in mine]),
            "top1_per_1k_train_images": round(top1 / (s.n / 1000), 2),
            "top1_per_1k_rendered_images": round(top1 / (mine[0]["rendered"] / 1000), 2),
            "train_s": round(train_s, 2), "score_s": round(score_s, 3),
            # nan only in a toy run whose training rounds to 0 s
            "top1_per_train_s": round(top1 / train_s, 3) if train_s > 0 else float("nan"),
            "top1_per_train_plus_score_s": round(top1 / (train_s + score_s), 3) if train_s + score_s > 0
            else float("nan"),
            "kept_fraction_mean": {c: round(statistics.mean(v), 4) for c, v in fractions.items()},
            "kept_fraction_min": min(min(v) for v in fractions.values()),
            "kept_fraction_max": max(max(v) for v in fractions.values()),
            "gain_vs_random": None if arm == "random" else
            _spread([round(r["top1"] - random_by_seed[r["seed"]], 2) for r in mine])})
    return out


def readme_lines(doc: dict[str, Any]) -> list[dict[str, str]]:
    """The headline figures as ``{"what", "figure", "spread"}`` lines (``effstack.report.results``' figures view)."""
    s, by_arm, t = doc["settings"], {a["arm"]: a for a in doc["summary"]}, doc["teacher"]
    seeds = len(s["seeds"])
    out = [{"what": f"teacher: the same CNN trained on the {t['train_samples']} real training digits, real test top-1",
            "figure": f"{t['top1']:.2f} %", "spread": f"{t['top1'] / (t['train_samples'] / 1000):.1f} per 1k images"}]
    names = {"random": f"random {s['n']} of the pool", "filtered": f"teacher's best {s['n']} ({s['score']})",
             "filtered-balanced": f"teacher's best {s['n']} ({s['score']}, the same share of each class)"}
    for arm in ARMS:
        a = by_arm[arm]
        out.append({"what": f"{names[arm]} of {s['pool']} synthetic digits, real test top-1 ({seeds} seeds)",
                    "figure": f"{a['top1']['mean']:.2f} %",
                    "spread": f"sd {a['top1']['sd']:.2f}, {a['top1']['min']:.2f}-{a['top1']['max']:.2f}; "
                              f"{a['top1_per_1k_train_images']:.1f} per 1k training images"})
    for arm in ARMS[1:]:
        g = by_arm[arm]["gain_vs_random"]
        out.append({"what": f"{names[arm]} minus random, paired by seed", "figure": f"{g['mean']:+.2f} points",
                    "spread": f"{g['min']:+.2f} to {g['max']:+.2f}"})
    r, f = by_arm["random"], by_arm["filtered"]
    out.append({"what": "top-1 per second: random (training) vs filtered (training + teacher's scoring)",
                "figure": f"{r['top1_per_train_s']:.2f} vs {f['top1_per_train_plus_score_s']:.2f} %/s",
                "spread": f"training {r['train_s']:.1f} vs {f['train_s']:.1f} s, scoring {f['score_s']:.2f} s"})
    means = f["kept_fraction_mean"]
    lo, hi = min(means, key=means.get), max(means, key=means.get)
    out.append({"what": f"teacher's best {s['n']}: kept fraction per class, mean over seeds (the pool's share is "
                        f"{s['n'] / s['pool']:.2f})",
                "figure": f"{means[lo]:.2f} (class {lo}) to {means[hi]:.2f} (class {hi})",
                "spread": f"{f['kept_fraction_min']:.2f}-{f['kept_fraction_max']:.2f} over classes and seeds"})
    return out


def run(s: Settings) -> dict[str, Any]:
    """Train the teacher, then the three arms for every seed; the JSON document (rows, summary, readme)."""
    t_start = time.perf_counter()
    x_real, y_real = as_arrays(resolve_data(REAL_TRAIN))
    test = as_arrays(resolve_data(REAL_TEST))
    teacher, teacher_s = train(x_real, y_real, s.teacher_epochs, 1000, s.width, "teacher (real)", "shift", s.progress)
    rows = [row for seed in s.seeds for row in run_seed(s, seed, teacher, test)]
    doc = {"benchmark": "teacher_filter", "evaluated_on": REAL_TEST, "command": " ".join(sys.argv),
           "model": f"effstack.testing.trained._cnn({s.width})", "settings": {**asdict(s), "pool": s.pool},
           "teacher": {"train_data": REAL_TRAIN, "train_samples": int(len(y_real)), "epochs": s.teacher_epochs,
                       "augment": "shift", "top1": round(evaluate(teacher, test), 2), "train_s": round(teacher_s, 2)},
           "rows": rows, "summary": summarize(rows, s)}
    doc["readme"] = readme_lines(doc)
    doc.update(seconds=round(time.perf_counter() - t_start, 1), machine=machine_info(), versions=library_versions())
    return doc


def table(doc: dict[str, Any]) -> str:
    s, t = doc["settings"], doc["teacher"]
    lines = [f"teacher-filtered synthetic digits: N={s['n']} of a pool of {s['pool_factor']}N, scored on "
             f"{doc['evaluated_on']} (model {doc['model']}, {s['epochs']} epochs; teacher {t['top1']:.2f} % "
             f"from {t['train_samples']} real images)",
             f"{'arm':<18} {'seed':>4} {'top-1 %':>8} {'train s':>8} {'score s':>8} {'kept/class':>11}"]
    for r in doc["rows"]:
        kf = r["kept_fraction"].values()
        lines.append(f"{r['arm']:<18} {r['seed']:>4} {r['top1']:>8.2f} {r['train_s']:>8.1f} {r['score_s']:>8.2f} "
                     f"{min(kf):>5.2f}-{max(kf):.2f}")
    lines += ["", f"{'arm':<18} {'top-1 %':>8} {'sd':>5} {'min-max':>13} {'gain':>7} {'/1k train':>9} "
                  f"{'/1k rendered':>12} {'/train s':>8} {'/(train+score) s':>16} {'kept/class':>11}"]
    for a in doc["summary"]:
        t, g = a["top1"], a["gain_vs_random"]
        lines.append(f"{a['arm']:<18} {t['mean']:>8.2f} {t['sd']:>5.2f} {t['min']:>6.2f}-{t['max']:<6.2f} "
                     f"{'-' if g is None else format(g['mean'], '+.2f'):>7} {a['top1_per_1k_train_images']:>9.1f} "
                     f"{a['top1_per_1k_rendered_images']:>12.1f} {a['top1_per_train_s']:>8.2f} "
                     f"{a['top1_per_train_plus_score_s']:>16.2f} {a['kept_fraction_min']:>5.2f}-"
                     f"{a['kept_fraction_max']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1200, help="training images per student (default 1200, as many as the "
                                                       "real training split)")
    p.add_argument("--pool-factor", type=int, default=4, help="pool size as a multiple of N (default 4)")
    p.add_argument("--seeds", type=lambda v: tuple(int(t) for t in v.split(",")), default=(0, 1, 2),
                   help="seeds, comma-separated (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=30, help="student epochs (default 30)")
    p.add_argument("--teacher-epochs", type=int, default=30, help="teacher epochs on the real images (default 30)")
    p.add_argument("--width", type=int, default=32, help="CNN width of teacher and students (default 32)")
    p.add_argument("--score", default="margin", choices=["margin", "confidence", "agreement"],
                   help="the teacher's score (default margin)")
    p.add_argument("--workers", type=int, default=2, help="generator processes (default 2)")
    p.add_argument("--train-threads", type=int, default=1,
                   help="torch threads (default 1: on a busy machine, more threads spin and are slower)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quick", action="store_true", help="small and short (checks the script works)")
    p.add_argument("--json", metavar="PATH", help="write the rows, summary and readme lines as JSON")
    args = p.parse_args(argv)
    if args.n < 10 or args.pool_factor < 2:
        p.error(f"--n must be >= 10 and --pool-factor >= 2, got {args.n} and {args.pool_factor}")
    import torch

    torch.set_num_threads(args.train_threads)
    s = Settings(n=args.n, pool_factor=args.pool_factor, seeds=args.seeds, epochs=args.epochs,
                 teacher_epochs=args.teacher_epochs, width=args.width, score=args.score, workers=args.workers,
                 progress=not args.no_progress)
    if args.quick:
        s = Settings(n=200, pool_factor=4, seeds=(0, 1), epochs=40, teacher_epochs=30, width=16, score=args.score,
                     workers=args.workers, progress=s.progress)
    doc = run(s)
    print(table(doc))
    if args.json:
        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
