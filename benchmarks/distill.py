"""Benchmark ``effstack.compress.distill``: a small student taught by a teacher against the same student on labels.

Only ``--labelled`` of scikit-learn's 1200 training digits keep their labels (no download; the test set is
the fixed 597). The teacher (a VGG-style CNN with BatchNorm) is trained on those labelled images only, so
no run sees a label the baseline does not. Per seed, three students of the same architecture and start:

* ``labels``: cross-entropy on the labelled images (with label smoothing ``--smoothing``);
* ``distill``: the same images, ``alpha`` × teacher term + (1 - alpha) × labels;
* ``distill+unlabelled``: every training image, labels dropped: the teacher labels them (the same
  number of optimizer steps as the others, so no run gets more compute).

All share augmentation (random shifts; the teacher sees each student's augmented batch) and settings.
Reported: test top-1 per seed, mean ± standard deviation and range over seeds, and each distilled
student's gain over the labels-only one of the same seed.

    nice -n 5 python benchmarks/distill.py --json results/distill.json
    python benchmarks/distill.py --smoke            # tiny and short: checks the script runs

Never run as a test: it trains for minutes on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labelled", type=int, default=300, help="training images that keep labels (default 300)")
    p.add_argument("--size", type=int, default=8, help="image side, a multiple of 8 (default 8)")
    p.add_argument("--teacher-width", type=int, default=16, help="teacher's first-layer channels (default 16)")
    p.add_argument("--student-width", type=int, default=16, help="student's first-layer channels (default 16)")
    p.add_argument("--teacher-epochs", type=int, default=60, help="teacher epochs (default 60)")
    p.add_argument("--epochs", type=int, default=60, help="student epochs over the labelled images (default 60)")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    p.add_argument("--alpha", type=float, default=0.9, help="teacher weight when labels are used (default 0.9)")
    p.add_argument("--smoothing", type=float, default=0.0, help="label smoothing of the labels-only run (default 0)")
    p.add_argument("--seeds", type=int, default=3, help="independent students per method (default 3)")
    from _shrink import digits, parse, small_cnn, spread_text, vgg, write_json

    args = parse(p, argv, {"labelled": 100, "teacher_epochs": 2, "epochs": 2, "seeds": 1})

    from effstack.compress import DistillConfig, distill
    from effstack.train import TrainConfig, evaluate, fit

    t0 = time.perf_counter()
    (x, y), test = digits(args.size)
    if not 0 < args.labelled <= len(x):
        p.error(f"--labelled must be in 1..{len(x)}, got {args.labelled}")
    labelled = (x[:args.labelled], y[:args.labelled])
    teacher = vgg(args.teacher_width, seed=1000)
    fit(teacher, labelled, TrainConfig(epochs=args.teacher_epochs, lr=3e-3, batch_size=32, augment="shift"),
        val=test, label="teacher")
    teacher_top1 = evaluate(teacher, test)
    runs: dict[str, list[float]] = {"labels": [], "distill": [], "distill+unlabelled": []}
    for seed in range(args.seeds):
        def cfg(epochs: int, smoothing: float = 0.0) -> TrainConfig:
            return TrainConfig(epochs=epochs, lr=3e-3, batch_size=32, augment="shift", seed=seed,
                               label_smoothing=smoothing)

        student = small_cnn(args.student_width, seed=seed, size=args.size)
        fit(student, labelled, cfg(args.epochs, args.smoothing), label=f"labels {seed}")
        runs["labels"].append(evaluate(student, test))
        student = small_cnn(args.student_width, seed=seed, size=args.size)
        distill(teacher, student, labelled, DistillConfig(args.temperature, args.alpha, cfg(args.epochs)))
        runs["distill"].append(evaluate(student, test))
        student = small_cnn(args.student_width, seed=seed, size=args.size)
        same_steps = max(1, round(args.epochs * args.labelled / len(x)))
        distill(teacher, student, x, DistillConfig(args.temperature, 1.0, cfg(same_steps)))
        runs["distill+unlabelled"].append(evaluate(student, test))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()), flush=True)
    params = sum(p.numel() for p in small_cnn(args.student_width, size=args.size).parameters())
    print(f"\nteacher top-1 {teacher_top1:.2f} ({sum(p.numel() for p in teacher.parameters()):,} params), "
          f"student {params:,} params, {args.labelled} labelled of {len(x)} training images, {args.seeds} seeds")
    print(f"{'student':<20} {'test top-1: mean ± sd (range, n)':<36} {'gain over labels, per seed':<30}")
    rows = []
    for name, accs in runs.items():
        gains = [a - b for a, b in zip(accs, runs["labels"])]
        gain_text = "" if name == "labels" else " ".join(f"{g:+.2f}" for g in gains)
        print(f"{name:<20} {spread_text(accs):<36} {gain_text}")
        rows.append({"student": name, "top1": accs, "summary": spread_text(accs), "gain_per_seed": gains,
                     "wins": sum(g > 0 for g in gains)})
    print(f"{time.perf_counter() - t0:.0f} s in all")
    write_json(args.json, {"distill_benchmark": {"teacher_top1": teacher_top1, "rows": rows}, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
