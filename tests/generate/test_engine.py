"""The continuous-batching engine on a tiny random Llama: exact greedy equality with one-at-a-time, join/leave,
EOS, admission, cancellation, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import types

import pytest

from effstack.errors import InputError
from effstack.generate.admission import Budget, PromptTooLong, Refused

from .conftest import greedy_alone

TEXTS = ["the quick brown fox jumps over the lazy dog", "a cat", "one two three four five six seven eight one two",
         "red green blue river tree house car road city", "python code file data model text token batch engine"]


def test_requests_run_together_equal_each_run_alone(tiny_lm, engine_factory):
    prompts = [tiny_lm.encode(t) for t in TEXTS]
    lengths = [12, 5, 20, 9, 16]  # short ones leave the batch while the others go on
    refs = [greedy_alone(tiny_lm, p, n) for p, n in zip(prompts, lengths)]
    engine = engine_factory()
    first = engine.submit(prompts[0], lengths[0], ignore_eos=True)
    events = iter(first)
    assert next(events).index == 0 and next(events).index == 1  # the first request is decoding already...
    later = [engine.submit(p, n, ignore_eos=True) for p, n in zip(prompts[1:], lengths[1:])]  # ...when these join
    streams = [first] + later
    for s in streams:
        s.wait(60)
    assert [s.tokens for s in streams] == refs
    assert all(s.status == "finished" and s.finish_reason == "length" for s in streams)
    assert engine.load().running == 0 and engine.counts["finished"] == 5


def test_a_batch_bigger_than_the_prefill_chunk_still_matches(tiny_lm, engine_factory):
    prompts = [tiny_lm.encode(" ".join(TEXTS[i % 5].split()[::-1] + TEXTS[(i + 1) % 5].split())) for i in range(8)]
    refs = [greedy_alone(tiny_lm, p, 6) for p in prompts]
    engine = engine_factory(max_batch_tokens=32)  # prompts of 8 requests take several chunked-prefill steps
    streams = [engine.submit(p, 6, ignore_eos=True) for p in prompts]
    assert [s.wait(60).tokens for s in streams] == refs


def test_stream_events_times_and_summary(tiny_lm, engine_factory):
    engine = engine_factory()
    s = engine.submit(tiny_lm.encode(TEXTS[0]), 7, ignore_eos=True)
    events = list(s)
    assert [e.index for e in events[:-1]] == list(range(7)) and events[-1].finished and not events[-1].error
    assert sum((e.tokens for e in events), []) == s.tokens
    assert 0 < s.ttft_s and 0 < s.tpot_s and s.first_at <= s.last_at <= s.finished_at
    summary = s.summary()
    assert summary["tokens"] == 7 and summary["ttft_ms"] > 0 and summary["finish_reason"] == "length"
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="aiter"):
            next(iter(engine.submit(tiny_lm.encode("a"), 1, loop=loop)))
    finally:
        loop.close()  # the engine's later deliveries to a closed loop are dropped, not fatal
    assert engine.submit(tiny_lm.encode("a cat"), 2).wait(60).status == "finished"


def test_eos_ends_a_request_early(tiny_lm, engine_factory):
    prompt = tiny_lm.encode(TEXTS[2])
    ref = greedy_alone(tiny_lm, prompt, 20)
    stop = ref[4]
    lm = dataclasses.replace(tiny_lm, tokenizer=types.SimpleNamespace(eos_token_id=stop))
    engine = engine_factory(lm=lm)
    s = engine.submit(prompt, 20).wait(60)
    assert s.tokens == ref[:ref.index(stop) + 1] and s.finish_reason == "stop"
    assert engine.submit(prompt, 20, ignore_eos=True).wait(60).tokens == ref


def test_admission_refuses_what_would_break_tpot(tiny_lm, engine_factory):
    engine = engine_factory(Budget(ttft_ms=1e6, tpot_ms=1e-6), max_context=256)
    long = engine.submit(tiny_lm.encode(TEXTS[0]), 200, ignore_eos=True)  # alone: admitted whatever the TPOT
    with pytest.raises(Refused) as info:
        engine.submit(tiny_lm.encode(TEXTS[1]), 4)
    assert info.value.status == 429 and info.value.decision.reason == "tpot_budget"
    assert info.value.retry_after_s > 0 and "TPOT" in str(info.value)
    assert engine.counts["refused_tpot_budget"] == 1
    engine.cancel(long)
    assert long.status == "cancelled" and engine.load().running == 0
    assert engine.submit(tiny_lm.encode(TEXTS[1]), 2).wait(60).status == "finished"  # the slot is free again


def test_batch_full_and_context(tiny_lm, engine_factory):
    engine = engine_factory(max_running=2, max_context=64)
    a = [engine.submit(tiny_lm.encode(t), 50, ignore_eos=True) for t in TEXTS[:2]]
    with pytest.raises(Refused, match="the most this engine holds"):
        engine.submit(tiny_lm.encode(TEXTS[2]), 4)
    for s in a:
        engine.cancel(s)
    with pytest.raises(PromptTooLong, match="context of 64"):
        engine.submit(tiny_lm.encode(TEXTS[0]), 60)


def test_prompt_that_cannot_meet_ttft_alone_is_an_input_error(tiny_lm, engine_factory):
    engine = engine_factory(Budget(ttft_ms=1e-6, tpot_ms=1e6))
    with pytest.raises(PromptTooLong, match="shorten"):
        engine.submit(tiny_lm.encode(TEXTS[0]), 4)


@pytest.mark.parametrize("prompt, max_tokens, match", [
    ([], 4, "no tokens"), ([1, 10_000], 4, "token ids"), ([5, 6], 0, "max_tokens"), ([5, 6], True, "max_tokens")])
def test_bad_requests(engine_factory, prompt, max_tokens, match):
    engine = engine_factory()
    with pytest.raises(InputError, match=match):
        engine.submit(prompt, max_tokens)


def test_a_stopped_engine_refuses_with_503(tiny_lm, engine_factory):
    engine = engine_factory()
    engine.stop()
    with pytest.raises(Refused) as info:
        engine.submit(tiny_lm.encode("a cat"), 2)
    assert info.value.status == 503


def test_calibration_fits_a_step_cost(engine_factory):
    engine = engine_factory()
    c = engine.costs.cost()
    assert c.samples > 0 and c.step_s(1) > 0
    assert engine.stats()["step_cost_ms"]["samples"] == c.samples and engine.stats()["counts"] == {}
