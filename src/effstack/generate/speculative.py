"""Speculative decoding with a draft model: transformers' assisted generation, plus the counts it does not report.

The library path is ``target.generate(ids, assistant_model=draft, do_sample=False)``: each iteration the draft
proposes a few tokens greedily, the target scores them all in one forward pass, keeps the longest prefix that
matches its own greedy choice and adds one token of its own. With greedy decoding the output is the target's own
greedy output (up to float rounding: scoring several tokens at once can flip a near-tie), and it is one sequence at
a time (batch 1). transformers 5.25's defaults: up to 20 draft tokens per iteration, the draft stopping early
once its top probability falls below a confidence threshold (0.4, adapted as it goes when scikit-learn is
installed); both can be set.

What effstack adds: the acceptance rate (draft tokens accepted / proposed), counted by wrapping the candidate
generator of that one call (``get_candidates`` and ``update_candidate_strategy`` on the instance, nothing global),
a check that the draft shares the target's tokenizer, and :func:`compare` (plain greedy vs assisted on the same
prompts: identical outputs, acceptance, speed-up).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, InputError, MissingDependencyError
from .model import LanguageModel

__all__ = ["SpecStats", "check_pair", "greedy", "assisted", "compare"]


@dataclass
class SpecStats:
    """Draft tokens proposed and accepted over one or more assisted generations."""

    proposed: int = 0
    accepted: int = 0
    iterations: int = 0  # target forward passes
    new_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)  # draft tokens proposed per iteration

    @property
    def acceptance_rate(self) -> float | None:
        return None if self.proposed == 0 else self.accepted / self.proposed

    @property
    def tokens_per_iteration(self) -> float | None:
        return None if self.iterations == 0 else self.new_tokens / self.iterations

    def add(self, other: SpecStats) -> None:
        self.proposed += other.proposed
        self.accepted += other.accepted
        self.iterations += other.iterations
        self.new_tokens += other.new_tokens
        self.lengths += other.lengths

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("lengths")
        d["acceptance_rate"] = self.acceptance_rate
        d["tokens_per_iteration"] = self.tokens_per_iteration
        return d


def check_pair(target: LanguageModel, draft: LanguageModel) -> None:
    """Raise :class:`ConfigError` unless ``draft`` can draft for ``target`` (same vocabulary, same token ids)."""
    tv, dv = int(target.model.config.vocab_size), int(draft.model.config.vocab_size)
    if tv != dv:
        raise ConfigError(f"the draft's vocabulary ({dv} tokens) differs from the target's ({tv}); train the draft "
                          "with the target's tokenizer (effstack generate train --teacher ...)")
    if target.tokenizer.get_vocab() != draft.tokenizer.get_vocab():
        raise ConfigError("the draft's tokenizer maps tokens to different ids than the target's; train the draft "
                          "with the target's tokenizer (effstack generate train --teacher ...)")


def _ids(prompt: Sequence[int]) -> Any:
    import torch

    ids = [int(t) for t in prompt]
    if not ids:
        raise InputError("the prompt has no tokens; send some text")
    return torch.tensor([ids], dtype=torch.long)


def _kwargs(lm: LanguageModel, max_new_tokens: int) -> dict[str, Any]:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    pad = lm.model.config.pad_token_id
    return {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": 0 if pad is None else pad,
            "eos_token_id": lm.eos_token_id}


def greedy(lm: LanguageModel, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """Plain greedy decoding (transformers ``generate``, KV cache), the new tokens only; stops at EOS."""
    import torch

    ids = _ids(prompt)
    with torch.inference_mode():
        out = lm.model.generate(ids, **_kwargs(lm, max_new_tokens))
    return out[0, ids.shape[1]:].tolist()


def assisted(target: LanguageModel, draft: LanguageModel, prompt: Sequence[int], max_new_tokens: int,
             num_assistant_tokens: int | None = None,
             confidence_threshold: float | None = None) -> tuple[list[int], SpecStats]:
    """Greedy assisted generation of ``target`` with ``draft``: (new tokens, :class:`SpecStats` of this call).

    ``num_assistant_tokens``: most draft tokens per iteration (schedule "constant"); ``confidence_threshold``:
    the draft stops proposing when its top probability is below it (0 proposes all ``num_assistant_tokens``).
    None keeps transformers' defaults.
    """
    import torch

    check_pair(target, draft)
    ids = _ids(prompt)
    stats = SpecStats()
    model = target.model
    if not hasattr(model, "_get_candidate_generator"):
        import transformers

        raise MissingDependencyError(f"transformers with assisted generation's _get_candidate_generator "
                                     f"(found {transformers.__version__})", "lm", "speculative decoding")
    original = model._get_candidate_generator

    def counting_generator(*args: Any, **kwargs: Any) -> Any:
        gen = original(*args, **kwargs)
        get, update = gen.get_candidates, gen.update_candidate_strategy

        def get_candidates(input_ids: Any, *a: Any, **k: Any) -> Any:
            cand, logits = get(input_ids, *a, **k)
            n = int(cand.shape[1] - input_ids.shape[1])
            stats.lengths.append(n)
            stats.proposed += n
            return cand, logits

        def update_candidate_strategy(input_ids: Any, scores: Any, num_matches: Any) -> Any:
            stats.accepted += int(num_matches)
            stats.iterations += 1
            return update(input_ids, scores, num_matches)

        gen.get_candidates, gen.update_candidate_strategy = get_candidates, update_candidate_strategy
        return gen

    # a fresh config per call: transformers' heuristic schedule writes the adapted draft length back into the
    # draft's generation_config, which would otherwise carry over from one call to the next
    gc = copy.deepcopy(draft.model.generation_config)
    if num_assistant_tokens is not None:
        if not isinstance(num_assistant_tokens, int) or num_assistant_tokens < 1:
            raise InputError(f"num_assistant_tokens must be a positive integer, got {num_assistant_tokens!r}")
        gc.num_assistant_tokens, gc.num_assistant_tokens_schedule = num_assistant_tokens, "constant"
    if confidence_threshold is not None:
        if not 0.0 <= confidence_threshold < 1.0:
            raise InputError(f"confidence_threshold must be in [0, 1), got {confidence_threshold!r}")
        gc.assistant_confidence_threshold = float(confidence_threshold)
    saved = draft.model.generation_config
    draft.model.generation_config = gc
    model._get_candidate_generator = counting_generator
    try:
        with torch.inference_mode():
            out = model.generate(ids, assistant_model=draft.model, **_kwargs(target, max_new_tokens))
    finally:
        del model._get_candidate_generator  # the instance attribute goes; the class method is back
        draft.model.generation_config = saved
    new = out[0, ids.shape[1]:].tolist()
    stats.new_tokens = len(new)
    return new, stats


def compare(target: LanguageModel, draft: LanguageModel, prompts: Sequence[Sequence[int]], max_new_tokens: int = 32,
            num_assistant_tokens: int | None = None, confidence_threshold: float | None = None,
            reference: Sequence[Sequence[int]] | None = None,
            reference_s: Sequence[float] | None = None) -> dict[str, Any]:
    """Plain greedy vs assisted generation of ``target`` on each prompt (batch 1): identical outputs, acceptance,
    tokens/s of each and the speed-up (medians over prompts).

    ``reference`` / ``reference_s``: plain greedy outputs and times already measured (the ladder's previous rung);
    else they are measured here, alternating with the assisted runs.
    """
    if not prompts:
        raise InputError("compare needs at least one prompt")
    if reference is not None and (len(reference) != len(prompts) or reference_s is None
                                  or len(reference_s) != len(prompts)):
        raise InputError("reference and reference_s must give one output and one time per prompt")
    check_pair(target, draft)
    total = SpecStats()
    plain_s, spec_s, plain_n, spec_n, same, mismatch = [], [], [], [], [], None
    for i, prompt in enumerate(prompts):
        if reference is None:
            t0 = time.perf_counter()
            ref = greedy(target, prompt, max_new_tokens)
            plain_s.append(time.perf_counter() - t0)
        else:
            ref = [int(t) for t in reference[i]]
            plain_s.append(float(reference_s[i]))  # type: ignore[index]
        plain_n.append(len(ref))
        t0 = time.perf_counter()
        out, stats = assisted(target, draft, prompt, max_new_tokens, num_assistant_tokens, confidence_threshold)
        spec_s.append(time.perf_counter() - t0)
        spec_n.append(len(out))
        total.add(stats)
        same.append(out == ref)
        if out != ref and mismatch is None:
            at = next((j for j, (a, b) in enumerate(zip(out, ref)) if a != b), min(len(out), len(ref)))
            mismatch = {"prompt": i, "position": at}
    plain_tps = statistics.median(n / s for n, s in zip(plain_n, plain_s))
    spec_tps = statistics.median(n / s for n, s in zip(spec_n, spec_s))
    return {"identical": all(same), "identical_count": sum(same), "prompts": len(prompts), "first_mismatch": mismatch,
            "spec": total.to_dict(), "plain_tokens_per_s": plain_tps, "spec_tokens_per_s": spec_tps,
            "speedup": spec_tps / plain_tps, "plain_s": plain_s, "spec_s": spec_s}
