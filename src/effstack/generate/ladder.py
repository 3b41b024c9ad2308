"""The ladder for a language model: fp32 baseline, INT8 weights, speculative decoding with a draft.

The same honesty rules as :mod:`effstack.ladder.core`, with perplexity as the quality and generation speed as the
objective, all measured side by side in one run on the same prompts and held-out text:

1. **fp32** (the baseline): perplexity on held-out text (:func:`~effstack.generate.quality.perplexity`), greedy
   generation tokens/s at batch 1 (median over prompts) and at ``batch`` (one batched ``generate``).
2. **INT8 weights** (:func:`~effstack.generate.quantize.quantize_lm`): kept only if its perplexity is within
   ``ppl_tolerance`` of the *baseline's* (relative: +5% by default) and its objective speed is at least
   ``min_gain`` times the current best's.
3. **speculative decoding** (:mod:`~effstack.generate.speculative`) of the current best target with the draft:
   kept only if every greedy output is identical to the current best's plain greedy output on the same prompts
   and it is ``min_gain`` times faster at batch 1. Its perplexity is the target's (it changes how tokens are
   found, not which). Assisted generation runs one sequence at a time, so with ``objective="batched"`` the rung
   is skipped with that reason.

Speeds: greedy ``generate`` end to end (prefill of a ``prompt_tokens`` prompt included), new tokens over
wall-clock seconds. The objective is ``batch1`` (one stream's speed: what TPOT feels like) or ``batched``
(throughput at ``batch``). Step speed-up is over the previous kept rung; total over the baseline.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError, InputError
from .model import LanguageModel

__all__ = ["LMLadderConfig", "decide", "prompt_ids", "measure", "run_lm_ladder", "format_table"]

KEPT, REJECTED, SKIPPED = "kept", "rejected", "skipped"
OBJECTIVES = ("batch1", "batched")


@dataclass(frozen=True)
class LMLadderConfig:
    ppl_tolerance: float = 0.05  # relative: 0.05 = perplexity may rise by 5% over the baseline's
    min_gain: float = 1.05
    objective: str = "batch1"
    context: int = 128
    eval_tokens: int = 4096
    prompts: int = 4
    prompt_tokens: int = 32
    new_tokens: int = 32
    batch: int = 8
    num_assistant_tokens: int | None = None
    confidence_threshold: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.ppl_tolerance, (int, float)) and 0 <= self.ppl_tolerance < 10):
            raise ConfigError(f"ppl_tolerance is a relative rise (0.05 = 5%), got {self.ppl_tolerance!r}")
        if not self.min_gain >= 1.0:
            raise ConfigError(f"min_gain must be at least 1.0 (a rung must not be slower), got {self.min_gain}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("context", "eval_tokens", "prompts", "prompt_tokens", "new_tokens", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(ppl: float, base_ppl: float, speed: float, best_speed: float, config: LMLadderConfig,
           identical: bool | None = None) -> tuple[str, str]:
    """(status, reason) of a rung: quality first (outputs, then perplexity vs the baseline), then speed.

    >>> c = LMLadderConfig()
    >>> decide(10.2, 10.0, 12.0, 10.0, c)
    ('kept', '1.20x the current best')
    >>> decide(11.0, 10.0, 20.0, 10.0, c)[0]
    'rejected'
    """
    if identical is False:
        return REJECTED, "greedy outputs differ from the plain target's"
    limit = base_ppl * (1.0 + config.ppl_tolerance)
    if not (math.isfinite(ppl) and ppl <= limit):
        return REJECTED, (f"perplexity {ppl:.3f} is over the baseline's {base_ppl:.3f} "
                          f"+{config.ppl_tolerance:.0%} ({limit:.3f})")
    gain = speed / best_speed if best_speed > 0 else math.inf
    if gain < config.min_gain:
        return REJECTED, f"{gain:.2f}x the current best (needs {config.min_gain:.2f}x)"
    return KEPT, f"{gain:.2f}x the current best"


def prompt_ids(lm: LanguageModel, texts: Sequence[str], count: int, length: int) -> list[list[int]]:
    """The first ``length`` tokens of the first ``count`` texts that have that many (equal lengths: no padding)."""
    out: list[list[int]] = []
    for text in texts:
        ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= length:
            out.append([int(t) for t in ids[:length]])
            if len(out) == count:
                return out
    raise InputError(f"only {len(out)} of the texts have {length} tokens; {count} prompts are needed: give more "
                     "or longer texts, or lower prompt_tokens")


def _generate(lm: LanguageModel, ids: Any, new_tokens: int, until_eos: bool) -> Any:
    import torch

    pad = lm.model.config.pad_token_id
    kw: dict[str, Any] = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0 if pad is None else pad,
                          "eos_token_id": lm.eos_token_id}
    if not until_eos:
        kw["min_new_tokens"] = new_tokens  # fixed length: every row makes new_tokens tokens
    with torch.inference_mode():
        return lm.model.generate(ids, **kw)


def measure(lm: LanguageModel, prompts: Sequence[Sequence[int]], config: LMLadderConfig) -> dict[str, Any]:
    """Greedy generation of ``lm`` at batch 1 (each prompt, until EOS or ``new_tokens``) and at ``batch``."""
    import torch

    _generate(lm, torch.tensor([list(prompts[0])]), 2, True)  # warm-up: first-call allocations
    outputs, seconds, rates = [], [], []
    for p in prompts:
        ids = torch.tensor([list(p)])
        t0 = time.perf_counter()
        out = _generate(lm, ids, config.new_tokens, True)
        dt = time.perf_counter() - t0
        new = out[0, ids.shape[1]:].tolist()
        outputs.append(new)
        seconds.append(dt)
        rates.append(len(new) / dt)
    rows = [list(prompts[i % len(prompts)]) for i in range(config.batch)]
    t0 = time.perf_counter()
    _generate(lm, torch.tensor(rows), config.new_tokens, False)
    dt = time.perf_counter() - t0
    return {"outputs": outputs, "seconds": seconds, "tokens_per_s_b1": statistics.median(rates),
            "tokens_per_s_b1_range": [min(rates), max(rates)],
            "tokens_per_s_batch": config.batch * config.new_tokens / dt, "batch": config.batch}


def _speed(m: dict[str, Any], objective: str) -> float:
    return float(m["tokens_per_s_b1"] if objective == "batch1" else m["tokens_per_s_batch"])


def run_lm_ladder(lm: LanguageModel, eval_texts: Sequence[str], prompt_texts: Sequence[str],
                  draft: LanguageModel | None = None, config: LMLadderConfig | None = None,
                  on_rung: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Climb fp32 -> INT8 weights -> speculative decoding on ``lm``; see the module doc. Returns the result
    document (``rungs``, ``final``, ``config``); ``on_rung`` sees each rung as it is decided."""
    from .quality import perplexity
    from .quantize import quantize_lm
    from .speculative import check_pair, compare

    config = config or LMLadderConfig()
    if draft is not None:
        check_pair(lm, draft)
    prompts = prompt_ids(lm, prompt_texts, config.prompts, config.prompt_tokens)
    rungs: list[dict[str, Any]] = []

    def ppl(model: LanguageModel) -> float:
        return perplexity(model, eval_texts, context=config.context, max_tokens=config.eval_tokens).perplexity

    def record(rung: dict[str, Any]) -> dict[str, Any]:
        rungs.append(rung)
        if on_rung is not None:
            on_rung(rung)
        return rung

    base_ppl = ppl(lm)
    base = measure(lm, prompts, config)
    best = {"name": "fp32", "lm": lm, "m": base, "ppl": base_ppl}
    base_speed = _speed(base, config.objective)
    record({"rung": "fp32", "status": KEPT, "reason": "baseline", "model": lm.name,
            "weights": lm.meta.get("weights", "fp32"), "perplexity": base_ppl, "ppl_change": 0.0,
            "tokens_per_s_b1": base["tokens_per_s_b1"], "tokens_per_s_b1_range": base["tokens_per_s_b1_range"],
            "tokens_per_s_batch": base["tokens_per_s_batch"], "step_speedup": 1.0, "total_speedup": 1.0})

    q = quantize_lm(lm)
    q_ppl = ppl(q)
    qm = measure(q, prompts, config)
    status, reason = decide(q_ppl, base_ppl, _speed(qm, config.objective), _speed(best["m"], config.objective), config)
    speed = _speed(qm, config.objective)
    record({"rung": "int8-weights", "status": status, "reason": reason, "model": q.name,
            "weights": q.meta.get("weights"), "perplexity": q_ppl, "ppl_change": q_ppl / base_ppl - 1.0,
            "tokens_per_s_b1": qm["tokens_per_s_b1"], "tokens_per_s_b1_range": qm["tokens_per_s_b1_range"],
            "tokens_per_s_batch": qm["tokens_per_s_batch"],
            "step_speedup": speed / _speed(best["m"], config.objective), "total_speedup": speed / base_speed,
            "greedy_same_as_fp32": sum(a == b for a, b in zip(qm["outputs"], base["outputs"]))})
    if status == KEPT:
        best = {"name": "int8-weights", "lm": q, "m": qm, "ppl": q_ppl}

    if draft is None:
        record({"rung": "speculative", "status": SKIPPED, "reason": "no draft model given"})
    elif config.objective != "batch1":
        record({"rung": "speculative", "status": SKIPPED,
                "reason": "assisted generation runs one sequence at a time; the objective is batched throughput"})
    else:
        target = best["lm"]
        c = compare(target, draft, prompts, config.new_tokens, config.num_assistant_tokens,
                    config.confidence_threshold, reference=best["m"]["outputs"], reference_s=best["m"]["seconds"])
        best_speed = _speed(best["m"], config.objective)
        status, reason = decide(best["ppl"], base_ppl, c["spec_tokens_per_s"], best_speed, config,
                                identical=c["identical"])
        record({"rung": "speculative", "status": status, "reason": reason, "model": f"{target.name} + {draft.name}",
                "draft": {"name": draft.name, "params": draft.meta.get("params")}, "target": best["name"],
                "perplexity": best["ppl"], "ppl_change": best["ppl"] / base_ppl - 1.0,
                "tokens_per_s_b1": c["spec_tokens_per_s"], "tokens_per_s_batch": None,
                "step_speedup": c["spec_tokens_per_s"] / best_speed,
                "total_speedup": c["spec_tokens_per_s"] / base_speed if config.objective == "batch1" else None,
                "identical": f"{c['identical_count']}/{c['prompts']}", "first_mismatch": c["first_mismatch"],
                "acceptance_rate": c["spec"]["acceptance_rate"], "spec": c["spec"]})
    kept = [r for r in rungs if r["status"] == KEPT]
    return {"model": lm.name, "weights": lm.meta.get("weights", "fp32"), "config": config.to_dict(),
            "prompts": len(prompts), "eval_texts": len(eval_texts), "rungs": rungs,
            "final": {"rung": kept[-1]["rung"], "total_speedup": kept[-1]["total_speedup"],
                      "perplexity": kept[-1]["perplexity"], "kept": [r["rung"] for r in kept]}}


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def format_table(result: dict[str, Any]) -> str:
    """The rungs as a fixed-width text table."""
    head = f"{'rung':<14} {'status':<9} {'ppl':>9} {'Δppl':>7} {'tok/s b1':>9} {'tok/s b' + str(result['config']['batch']):>9} " \
           f"{'step':>6} {'total':>6} {'accept':>7}  reason"
    lines = [head, "-" * len(head)]
    for r in result["rungs"]:
        lines.append(f"{r['rung']:<14} {r['status']:<9} {_num(r.get('perplexity'), '9.3f')} "
                     f"{_num(None if r.get('ppl_change') is None else 100 * r['ppl_change'], '+6.1f')}% "
                     f"{_num(r.get('tokens_per_s_b1'), '9.2f')} {_num(r.get('tokens_per_s_batch'), '9.2f')} "
                     f"{_num(r.get('step_speedup'), '5.2f')}x {_num(r.get('total_speedup'), '5.2f')}x "
                     f"{_num(r.get('acceptance_rate'), '7.2f')}  {r['reason']}")
    f = result["final"]
    lines.append(f"final: {' -> '.join(f['kept'])}, {f['total_speedup']:.2f}x the fp32 baseline "
                 f"({result['config']['objective']}), perplexity {f['perplexity']:.3f}")
    return "\n".join(lines)
