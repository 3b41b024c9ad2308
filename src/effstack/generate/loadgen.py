"""Continuous vs static vs one-at-a-time batching on the same engine, at the same TTFT/TPOT budgets (goodput).

All three modes run the same model code and the same paged-KV engine (:class:`GenerationEngine`); only the
scheduling differs, so the comparison isolates it:

- ``continuous``: each request is submitted when it arrives and joins the running batch at the next step; the
  budget admission refuses what would break the budgets (a refusal counts as a miss);
- ``static``: requests wait in a queue; when the engine is idle, up to ``batch`` of them (or fewer after
  ``max_wait_s``) start together, and the next batch starts only when the whole batch has finished;
- ``sequential``: one request at a time (static with ``batch=1``).

TTFT counts from arrival (queueing included). Goodput = requests that met both budgets / seconds of the run
(the arrival window, or longer if the last answer came later). Requests still unfinished at the deadline are
cancelled and count as misses.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, EffstackError
from .admission import Budget
from .engine import GenerationEngine, Stream

__all__ = ["Job", "make_jobs", "run_load", "MODES"]

MODES = ("continuous", "static", "sequential")


@dataclass(frozen=True)
class Job:
    at: float  # arrival, seconds after the start
    prompt_ids: tuple[int, ...]
    max_tokens: int


def make_jobs(prompts: list[list[int]], count: int, rate_rps: float, seed: int = 0,
              tokens: tuple[int, int] = (16, 48)) -> list[Job]:
    """``count`` Poisson arrivals at ``rate_rps``, prompts drawn from ``prompts``, output lengths uniform in ``tokens``."""
    if rate_rps <= 0 or count < 1 or not prompts:
        raise ConfigError("make_jobs needs a positive rate, a positive count and at least one prompt")
    rng = random.Random(seed)
    t, jobs = 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate_rps)
        jobs.append(Job(t, tuple(rng.choice(prompts)), rng.randint(*tokens)))
    return jobs


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_load(engine: GenerationEngine, jobs: list[Job], mode: str, budget: Budget, batch: int = 8,
             max_wait_s: float = 0.05, deadline_s: float | None = None, keep_tokens: bool = False) -> dict[str, Any]:
    """Play ``jobs`` against ``engine`` in ``mode``; per-request TTFT/TPOT, goodput and a summary."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    batch = 1 if mode == "sequential" else int(batch)
    window = jobs[-1].at if jobs else 0.0
    deadline = deadline_s if deadline_s is not None else 2.0 * window + 30.0
    streams: dict[int, Stream] = {}
    refused: dict[int, str] = {}
    pending: list[int] = []
    running: list[Stream] = []
    i = 0
    t0 = time.perf_counter()
    while True:
        now = time.perf_counter() - t0
        if now > deadline:
            break
        while i < len(jobs) and jobs[i].at <= now:
            pending.append(i)
            i += 1
        if mode == "continuous":
            for k in pending:
                job = jobs[k]
                try:
                    streams[k] = engine.submit(list(job.prompt_ids), job.max_tokens, ignore_eos=True,
                                               arrived_at=t0 + job.at)
                except EffstackError as exc:
                    refused[k] = getattr(getattr(exc, "decision", None), "reason", type(exc).__name__)
            pending.clear()
        else:
            running = [s for s in running if not s.done]
            if not running and pending and (len(pending) >= batch or i == len(jobs)
                                            or now - jobs[pending[0]].at >= max_wait_s):
                take, pending = pending[:batch], pending[batch:]
                for k in take:
                    job = jobs[k]
                    streams[k] = s = engine.submit(list(job.prompt_ids), job.max_tokens, ignore_eos=True,
                                                   admit=False, arrived_at=t0 + job.at)
                    running.append(s)
        if i == len(jobs) and not pending and all(s.done for s in streams.values()):
            break
        time.sleep(0.001 if i < len(jobs) or pending else 0.005)
    end = time.perf_counter() - t0
    for s in streams.values():  # past the deadline
        if not s.done:
            engine.cancel(s)
    while engine.load().running:  # let cancellations drain before the next run
        time.sleep(0.01)
    rows = []
    for k, job in enumerate(jobs):
        s = streams.get(k)
        row: dict[str, Any] = {"at": round(job.at, 4), "prompt_tokens": len(job.prompt_ids),
                               "max_tokens": job.max_tokens}
        if s is None:
            row.update(status="refused" if k in refused else "unserved", reason=refused.get(k), met=False)
        else:
            row.update(status=s.status, tokens=len(s.tokens), ttft_ms=None if s.ttft_s is None else s.ttft_s * 1e3,
                       tpot_ms=None if s.tpot_s is None else s.tpot_s * 1e3,
                       met=s.status == "finished" and budget.met(s.ttft_s, s.tpot_s))
            if keep_tokens:
                row["output_ids"] = list(s.tokens)
        rows.append(row)
    done = [r for r in rows if r["status"] == "finished"]
    duration = max(window, end)
    ttfts = [r["ttft_ms"] for r in done if r["ttft_ms"] is not None]
    tpots = [r["tpot_ms"] for r in done if r["tpot_ms"] is not None]
    met = sum(r["met"] for r in rows)
    summary = {
        "mode": mode, "batch": batch, "requests": len(jobs), "finished": len(done), "met_both": met,
        "refused": sum(r["status"] == "refused" for r in rows),
        "unfinished": sum(r["status"] not in ("finished", "refused") for r in rows),
        "duration_s": round(duration, 3), "offered_rps": round(len(jobs) / window, 3) if window else None,
        "goodput_rps": round(met / duration, 4) if duration else 0.0,
        "output_tokens_per_s": round(sum(r.get("tokens", 0) for r in done) / duration, 2) if duration else 0.0,
        "ttft_ms": {"p50": _pct(ttfts, 0.5), "p90": _pct(ttfts, 0.9), "max": max(ttfts, default=None)},
        "tpot_ms": {"p50": _pct(tpots, 0.5), "p90": _pct(tpots, 0.9), "max": max(tpots, default=None)},
        "mean_tpot_ms": statistics.fmean(tpots) if tpots else None,
    }
    return {"summary": summary, "requests": rows}
