"""Which Linear layers of a causal LM survive PyTorch's dynamic INT8: held-out perplexity and greedy speed for
each choice of layers kept in fp32, side by side in one run (SmolLM2-135M by default).

``effstack.generate.quantize_lm`` quantizes weights per output channel and activations per tensor, per call
(fbgemm: 7-bit activations). Layers whose inputs carry outlier channels lose most; this sweep shows which, and
whether any choice stays within the ladder's perplexity tolerance. Perplexity: the ladder's held-out texts (64,
seed 0), windows of 128 tokens, the first ``--eval-tokens`` tokens. Speed: greedy decoding at batch 1, median
over ``--prompts`` prompts of 32 tokens, ``--new-tokens`` new tokens each.

    .venv/bin/python benchmarks/lm_int8.py --json out.json
    .venv/bin/python benchmarks/lm_int8.py --model tiny          # smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CHOICES = {
    "none (every Linear INT8)": (),
    "lm_head": ("lm_head",),
    "down_proj": ("down_proj",),
    "down_proj + lm_head (default)": ("down_proj", "lm_head"),
    "down_proj + lm_head + gate/up": ("down_proj", "lm_head", "gate_proj", "up_proj"),
    "down_proj + lm_head + q/k/v": ("down_proj", "lm_head", "q_proj", "k_proj", "v_proj"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=0.05, help="the ladder's relative perplexity tolerance")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from effstack.generate import load_lm
    from effstack.generate.ladder import LMLadderConfig, measure, prompt_ids
    from effstack.generate.quality import heldout_texts, perplexity
    from effstack.generate.quantize import quantize_lm, quantized_linears
    from effstack.hardware import cpu_kind

    lm = load_lm(args.model)
    tiny = lm.name == "tiny"
    _, evals = heldout_texts(64)
    context = 16 if tiny else 128
    config = LMLadderConfig(prompts=args.prompts, new_tokens=args.new_tokens, prompt_tokens=8 if tiny else 32,
                            context=context, batch=1)
    prompts = prompt_ids(lm, evals[::-1], config.prompts, config.prompt_tokens)

    def row(name: str, model) -> dict:
        t0 = time.perf_counter()
        ppl = perplexity(model, evals, context=context, max_tokens=args.eval_tokens).perplexity
        m = measure(model, prompts, config)
        return {"keep_float": name, "int8_linears": quantized_linears(model.model), "perplexity": ppl,
                "tokens_per_s_b1": m["tokens_per_s_b1"], "tokens_per_s_b1_range": m["tokens_per_s_b1_range"],
                "seconds": round(time.perf_counter() - t0, 1)}

    rows = [row("fp32 (no INT8)", lm)]
    base = rows[0]
    print(f"{lm.name} on {cpu_kind()}: fp32 perplexity {base['perplexity']:.2f}, "
          f"{base['tokens_per_s_b1']:.1f} tokens/s", flush=True)
    for name, keep in CHOICES.items():
        r = row(name, quantize_lm(lm, keep_float=keep))
        r["ppl_change"] = r["perplexity"] / base["perplexity"] - 1
        r["speedup"] = r["tokens_per_s_b1"] / base["tokens_per_s_b1"]
        r["within_tolerance"] = r["ppl_change"] <= args.tolerance
        rows.append(r)
        print(f"  fp32 kept: {name:34s} {r['int8_linears']:4d} INT8 Linears, perplexity {r['perplexity']:8.2f} "
              f"({100 * r['ppl_change']:+.1f}%), {r['tokens_per_s_b1']:.1f} tokens/s ({r['speedup']:.2f}x)",
              flush=True)
    out = {"benchmark": "lm_int8", "model": lm.name, "weights": lm.meta.get("weights"), "cpu": cpu_kind(),
           "eval_tokens": args.eval_tokens, "tolerance": args.tolerance, "rows": rows,
           "readme": [{"what": f"{r['keep_float']}: INT8 Linears, perplexity (change), batch-1 tokens/s (x fp32)",
                       "figure": f"{r['int8_linears']}, {r['perplexity']:.1f} ({100 * r.get('ppl_change', 0):+.1f}%), "
                                 f"{r['tokens_per_s_b1']:.1f} ({r.get('speedup', 1.0):.2f}x)",
                       "spread": f"prompts {r['tokens_per_s_b1_range'][0]:.1f}-{r['tokens_per_s_b1_range'][1]:.1f} "
                                 "tokens/s"} for r in rows]}
    if args.json:
        from effstack._files import atomic_write_json

        atomic_write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
