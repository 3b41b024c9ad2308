"""``effstack synth RECIPE --n N --seed S --out DIR``: render a synthetic labelled data set.

Writes OUT/images/<class>/<index>.png, OUT/labels.jsonl (one JSON object per image: class, and for
``shapes`` the bounding box, rotation, translation and camera intrinsics), OUT/meta.json and
OUT/preview.png. The same data without files: the data spec ``synth:RECIPE?n=N&seed=S&size=32``.
"""

from __future__ import annotations

import argparse
import time


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render a synthetic labelled data set (digits, shapes)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("recipe", help="digits or shapes")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same images (default 0)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="randomization strength: 0 clean renders, 1 default, up to 3 (default 1)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default 0: one per core)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is not empty")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from ..synth import SynthConfig, check_output, generate, write_dataset

    config = SynthConfig(args.recipe, n=args.n, seed=args.seed, size=args.size, strength=args.strength,
                         workers=args.workers)
    check_output(args.out, args.overwrite)  # fail before rendering, not after
    t0 = time.perf_counter()
    batch = generate(config, progress=True)
    seconds = time.perf_counter() - t0
    out = write_dataset(batch, args.out, overwrite=args.overwrite)
    print(f"wrote {config.n} {config.recipe} images ({config.size}px, seed {config.seed}, strength "
          f"{config.strength:g}) to {out} in {seconds:.1f} s render; preview: {out / 'preview.png'}")
    return 0
