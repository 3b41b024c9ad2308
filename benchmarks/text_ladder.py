"""The ladder on a real text encoder: all-MiniLM-L6-v2 (or a folder), on the built-in corpus (or --data).

Rungs: PyTorch fp32 batch 1 (the reference) -> batching -> ONNX Runtime / OpenVINO -> guarded INT8 ->
a distilled student with fewer layers (-> its INT8), each kept only when recall@10 of the fp32 neighbours
holds within --max-drop and it is faster. Every text is truncated and padded to --seq-len tokens, so every
speed figure is at batch x seq-len. Besides the ladder's own accuracy column (recall@10, points), the JSON
carries each rung's model scored with :mod:`effstack.text.quality` (mean and min cosine agreement with
fp32, recall@10) on the held-out texts, run on ONNX Runtime (INT8 builds are QDQ ONNX files).

    .venv/bin/python benchmarks/text_ladder.py --json results/text_ladder.json
    .venv/bin/python benchmarks/text_ladder.py --seq-len 64 --train-limit 1024 --epochs 1 --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time



def rung_quality(result, data) -> dict[str, dict]:
    """Each kept or rejected rung's model, scored against the baseline's embeddings on the evaluation ids."""
    from effstack.engines import SessionOptions, get_engine
    from effstack.text.quality import embed, score_text

    ids = data.eval_ids
    base = result.variants[result.rungs[0].variant]
    ref = embed(base.model, ids)
    out: dict[str, dict] = {}
    for rung in result.rungs:
        v = result.variants.get(rung.variant or "")
        if v is None or rung.variant in out:
            continue
        if v.int8:  # INT8 builds on two engines share a label: quote the guard's own scoring of this rung's build
            q = rung.details.get("quantize", {})
            chosen = [a for a in q.get("attempts", []) if a["method"] == q.get("method")
                      and a["kept_float"] == q.get("kept_float")]
            out[f"{rung.variant} ({rung.config.engine})"] = {
                "cosine_mean": chosen[-1].get("cosine") if chosen else None,
                "recall_at_10": chosen[-1]["score"] if chosen else None, "scored_by": "the INT8 guard"}
            continue
        try:
            if v.model.module is not None:
                q = score_text(v.model, ref, ids)
            else:
                with get_engine("onnxruntime").load(v.model, SessionOptions("fp32")) as s:
                    q = score_text(s, ref, ids)
            out[rung.variant] = q.to_dict()
        except Exception as exc:  # one variant that fails to score costs its row, not the run
            out[rung.variant] = {"error": str(exc)[:200]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--data", help="a .txt/.md/.jsonl file or folder of texts (default: the built-in corpus)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens a text (speed is measured at this length)")
    p.add_argument("--eval-count", type=int, default=256, help="held-out texts that score every rung")
    p.add_argument("--train-limit", type=int, help="at most this many training texts (calibration, distillation)")
    p.add_argument("--layers", type=int, help="the student's layers (default: half the teacher's)")
    p.add_argument("--epochs", type=int, default=2, help="distillation epochs")
    p.add_argument("--latency-budget", default="500ms", help="p99 of one batch")
    p.add_argument("--max-drop", default="10", help="recall@10 points a rung may lose against fp32")
    p.add_argument("--min-cosine", type=float, help="the INT8 guard's floor on mean cosine agreement")
    p.add_argument("--engines", default="onnxruntime,openvino")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per configuration")
    p.add_argument("--time-budget", type=float, help="seconds after which no rung starts")
    p.add_argument("--quick", action="store_true", help="shorter: 0.5 s a configuration, max batch 16")
    p.add_argument("--json", metavar="PATH", help="write the result here")
    args = p.parse_args(argv)

    from effstack.hardware import cpu_kind
    from effstack.ladder import Budget
    from effstack.ladder.pipeline import run_ladder
    from effstack.models import load_model
    from effstack.report.ladder import print_ladder
    from effstack.serve.config import parse_duration_ms
    from effstack.text.data import ladder_data

    if args.quick:
        args.seconds, args.max_batch = min(args.seconds, 0.5), min(args.max_batch, 16)
    t0 = time.perf_counter()
    model = load_model(args.model)
    data, text = ladder_data(model, args.data, eval_count=args.eval_count, seq_len=args.seq_len,
                             train_limit=args.train_limit)
    print(f"{args.model}: {text.describe()}", file=sys.stderr)
    result = run_ladder(model, budget=Budget(parse_duration_ms(args.latency_budget), args.max_drop), data=data,
                        student=args.layers, engines=tuple(e for e in args.engines.split(",") if e), precisions=(),
                        seconds=args.seconds, max_batch=args.max_batch, time_budget_s=args.time_budget,
                        distill_epochs=args.epochs, layout=False, min_cosine=args.min_cosine)
    print_ladder(result)
    quality = rung_quality(result, text)
    for label, q in quality.items():
        print(f"  {label}: {q}")
    doc = {"kind": "effstack.text_ladder", "model": args.model, "cpu": cpu_kind(), "seq_len": text.seq_len,
           "text": text.describe(), "settings": vars(args), "quality": quality,
           "seconds": round(time.perf_counter() - t0, 1), "ladder": result.to_dict()}
    if args.json:
        from effstack._files import atomic_write_json

        atomic_write_json(args.json, json.loads(json.dumps(doc, default=str)))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
