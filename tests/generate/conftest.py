"""Generation fixtures: the tiny random Llama (built in code) and engines over it."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_lm():
    from effstack.generate.tiny import tiny_llama

    return tiny_llama(seed=0)


@pytest.fixture
def engine_factory(tiny_lm):
    """Start engines over the tiny model; all are stopped at the end of the test."""
    from effstack.generate.engine import GenerationEngine

    started = []

    def make(budget=None, **kw):
        kw.setdefault("max_running", 8)
        kw.setdefault("max_context", 128)
        kw.setdefault("max_batch_tokens", 64)
        kw.setdefault("page_size", 16)
        lm = kw.pop("lm", tiny_lm)
        engine = GenerationEngine(lm, budget, **kw).start()
        started.append(engine)
        return engine

    yield make
    for e in started:
        e.stop()


def greedy_alone(lm, prompt, max_tokens):
    """The reference: transformers' plain generate (DynamicCache, no batching) for one request."""
    import torch

    with torch.no_grad():
        out = lm.model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False,
                                eos_token_id=None, pad_token_id=0, min_new_tokens=max_tokens)
    return out[0, len(prompt):].tolist()
