"""A soak (issue 17, item 5): minutes of steady load below capacity, the server's memory flat, no error, and every
request answered exactly once with its own id.

``effstack serve MODEL --latency-budget B`` runs as a separate process on 127.0.0.1; its capacity is ``--capacity``
or found briefly as ``benchmarks/serving_overload.py`` finds it (the highest Poisson rate within ``B``). Then real
HTTP clients (aiohttp, keep-alive) drive it open-loop at ``--load`` (0.7) x capacity for ``--minutes`` (10), at
most ``--max-requests``, each request carrying a unique OIP ``id`` (``soak-<n>``). Meanwhile the server process's
resident memory is sampled every ``--rss-every-s`` (psutil, else ``/proc/PID/status``).

Reported, with PASS/FAIL:

* RSS at the end of the warm-up (``--warmup-s``, at most a quarter of the run), at the end, and the largest drift
  from the former after the warm-up, in % (goal: within +-5%);
* errors: every response that is not 200, client timeouts, connection failures, requests still unanswered at the
  end (goal: 0);
* the id accounting: every response's ``id`` must be its own request's; none may be echoed twice or be missing;
  and the server's own success count over the run (``/metrics``) must equal the answers the clients read;
* afterwards, nothing left queued or computing (``effstack_queue_samples``, ``effstack_batches_in_flight``) and the
  readiness probe answering.

    python benchmarks/serving_soak.py                                         # ResNet-50 INT8, 10 minutes
    python benchmarks/serving_soak.py --model resnet18 --precision fp32 --budget-ms 100 --minutes 0.5
    python benchmarks/serving_soak.py --capacity 25 --json results/serving_soak.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its siblings, by path

from _servers import run, stop  # noqa: E402
from serving_overload import (  # noqa: E402
    InferRequest,
    add_server_args,
    alive,
    drive,
    find_capacity,
    metric,
    pcts,
    require_aiohttp,
    scrape,
    settle,
    start_server,
)

GOAL_RSS_DRIFT = 0.05  # RSS within +-5% of its value after the warm-up
ID_PREFIX = "soak-"


class RssSampler:
    """The resident memory of one process every ``every_s`` on a daemon thread: ``[(seconds since start, bytes)]``."""

    def __init__(self, pid: int, every_s: float):
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        try:
            import psutil

            self._process: Any = psutil.Process(pid)
        except ImportError:
            self._process = None

    def rss(self) -> int | None:
        if self._process is not None:
            try:
                return int(self._process.memory_info().rss)
            except Exception:  # the process is gone (psutil.Error)
                return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # kB
        except OSError:
            return None
        return None

    def _loop(self) -> None:
        t0 = time.monotonic()
        while True:
            value = self.rss()
            if value is not None:
                self.samples.append((time.monotonic() - t0, value))
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def rss_drift(samples: list[tuple[float, int]], warmup_s: float) -> dict[str, Any]:
    """RSS after the warm-up (the first sample at or past ``warmup_s``), at the end, and the drifts from it."""
    after = [(t, v) for t, v in samples if t >= warmup_s]
    if not after:
        return {"samples": len(samples), "start_mib": None, "end_mib": None, "end_drift": None, "max_drift": None}
    start = after[0][1]
    worst = max((v / start - 1 for _, v in after), key=abs)
    return {"samples": len(samples), "start_mib": start / 2**20, "end_mib": after[-1][1] / 2**20,
            "max_mib": max(v for _, v in after) / 2**20, "end_drift": after[-1][1] / start - 1, "max_drift": worst,
            "series_mib": [(round(t, 1), round(v / 2**20, 2)) for t, v in samples]}


class IdLedger:
    """Which id each response carried: ``echoed[id]`` counts the responses carrying it, ``wrong`` the responses
    whose id is not their own request's (a crossed or replayed answer), ``unreadable`` those without a JSON header
    to read one from."""

    def __init__(self) -> None:
        self.echoed: Counter[str] = Counter()
        self.wrong: list[tuple[int, str | None]] = []
        self.unreadable = 0

    def inspect(self, i: int, status: int, headers: Mapping[str, str], body: bytes) -> None:
        if status != 200:
            return
        try:
            n = int(headers.get("Inference-Header-Content-Length", len(body)))
            rid = json.loads(body[:n]).get("id")
        except (ValueError, AttributeError):
            self.unreadable += 1
            return
        if rid is not None:
            self.echoed[rid] += 1
        if rid != f"{ID_PREFIX}{i}":
            self.wrong.append((i, rid))

    def accounting(self, sent: int) -> dict[str, Any]:
        ids = {f"{ID_PREFIX}{i}" for i in range(sent)}
        return {"sent": sent, "echoed_once": sum(1 for rid in ids if self.echoed[rid] == 1),
                "echoed_twice_or_more": sum(1 for rid in ids if self.echoed[rid] > 1),
                "missing": sum(1 for rid in ids if self.echoed[rid] == 0),
                "foreign": sum(n for rid, n in self.echoed.items() if rid not in ids),
                "wrong_id": len(self.wrong), "wrong_examples": self.wrong[:5], "unreadable": self.unreadable}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    proc, target = start_server(args, "soak")
    try:
        capacity = find_capacity(args, target)
        rate = args.load * capacity["qps"]
        seconds = args.minutes * 60
        warmup_s = min(args.warmup_s, seconds / 4)
        request = InferRequest.from_target(target)
        ledger = IdLedger()
        before = settle(target.port, target.model)
        print(f"soak: {args.load:g} x {capacity['qps']:.1f}/s = {rate:.1f}/s for {args.minutes:g} min (at most "
              f"{args.max_requests} requests), RSS every {args.rss_every_s:g} s, warm-up {warmup_s:.0f} s", flush=True)
        with RssSampler(proc.pid, args.rss_every_s) as rss:
            out = run(drive(request, rate, seconds, max_requests=args.max_requests, connections=args.connections,
                            timeout_s=args.timeout_s, seed=args.seed, ids=ID_PREFIX, inspect=ledger.inspect))
        after = scrape(target.port)
        up = alive(target.port) and proc.poll() is None
    finally:
        stop(proc)
    model = {"model": target.model}
    kinds = Counter(out.status)
    n = len(out.status)
    errors = n - kinds.get("200", 0)
    served = (metric(after, "effstack_inference_request_success_total", **model)
              - metric(before, "effstack_inference_request_success_total", **model))
    ids = ledger.accounting(n)
    drift = rss_drift(rss.samples, warmup_s)
    left = {"queue_samples": metric(after, "effstack_queue_samples", **model),
            "batches_in_flight": metric(after, "effstack_batches_in_flight", **model)}
    r: dict[str, Any] = {
        "model": args.model, "precision": args.precision, "engine": args.engine, "budget_ms": args.budget_ms,
        "capacity": capacity, "load": args.load, "rate_qps": rate, "minutes": args.minutes, "warmup_s": warmup_s,
        "sent": n, "outcomes": dict(kinds), "errors": errors, "refused": kinds.get("503", 0),
        "ids": ids, "server_success": served,
        "rss": drift, "left_after": left, "alive_after": up, "wall_s": out.wall_s,
        "latency_from_sent": pcts(out.latency_ms("200", "sent")),
        "latency_from_scheduled": pcts(out.latency_ms("200", "scheduled")),
        "client_late": pcts(out.late_ms()),
    }
    max_drift = drift["max_drift"]
    r["checks"] = {
        f"RSS within +-{100 * GOAL_RSS_DRIFT:g}% after the warm-up": max_drift is not None
        and abs(max_drift) <= GOAL_RSS_DRIFT,
        "no errors": errors == 0,
        "every response carries its own id": ids["wrong_id"] == 0 and ids["foreign"] == 0 and ids["unreadable"] == 0,
        "no id answered twice": ids["echoed_twice_or_more"] == 0,
        "no id missing": ids["missing"] == 0,
        "server's success count = answers read": served == kinds.get("200", 0),
        "nothing queued or computing after": left["queue_samples"] == 0 and left["batches_in_flight"] == 0,
        "server alive after": up,
    }
    r["pass"] = all(r["checks"].values())
    return r


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_report(r: dict[str, Any]) -> None:
    d, ids = r["rss"], r["ids"]
    print(f"\n{r['model']} {r['precision']}, budget {r['budget_ms']:g} ms; capacity {r['capacity']['qps']:.1f}/s "
          f"({'given' if r['capacity']['given'] else 'measured'}); {r['rate_qps']:.1f}/s ({r['load']:g}x) for "
          f"{r['wall_s']:.0f} s: {r['sent']} sent, outcomes {r['outcomes']}, errors {r['errors']} (of which "
          f"{r['refused']} refused by admission, 503; the rest timeouts, connection failures, other statuses)")
    if d["start_mib"] is None:
        print(f"  RSS: no sample after the warm-up ({d['samples']} samples)")
    else:
        print(f"  RSS: {d['start_mib']:.1f} MiB after the {r['warmup_s']:.0f} s warm-up, {d['end_mib']:.1f} MiB at "
              f"the end ({100 * d['end_drift']:+.2f}%), max {d['max_mib']:.1f} MiB; largest drift "
              f"{100 * d['max_drift']:+.2f}% ({d['samples']} samples)")
    print(f"  ids: {ids['echoed_once']}/{ids['sent']} echoed once, {ids['echoed_twice_or_more']} twice or more, "
          f"{ids['missing']} missing, {ids['wrong_id']} on another request's response, {ids['foreign']} unknown, "
          f"{ids['unreadable']} unreadable; the server counted {r['server_success']:.0f} answers, the clients read "
          f"{r['outcomes'].get('200', 0)}")
    for label, v in (("200 from the real send", r["latency_from_sent"]),
                     ("200 from the scheduled send", r["latency_from_scheduled"]),
                     ("client lateness", r["client_late"])):
        print(f"  {label:30s} p50 {_ms(v['p50_ms'])} ms, p99 {_ms(v['p99_ms'])} ms, max {_ms(v['max_ms'])} ms")
    print(f"  after: {r['left_after']}, alive {r['alive_after']}")
    for name, ok in r["checks"].items():
        print(f"  {'pass' if ok else 'FAIL'}: {name}")
    print(f"  {'PASS' if r['pass'] else 'FAIL'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_args(p)
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of load (default 10)")
    p.add_argument("--load", type=float, default=0.7, help="offered load over capacity (default 0.7)")
    p.add_argument("--warmup-s", type=float, default=60.0,
                   help="seconds before the RSS reference is taken (default 60; at most a quarter of the run)")
    p.add_argument("--rss-every-s", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    p.add_argument("--max-requests", type=int, default=200_000, help="requests at most (default 200000)")
    p.add_argument("--seed", type=int, default=0, help="arrival schedule seed")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    args = p.parse_args()
    require_aiohttp(p)
    if not 0 < args.minutes <= 120 or not args.load > 0 or args.max_requests < 1 or not args.rss_every_s > 0:
        p.error("--minutes must be within (0, 120], --load and --rss-every-s positive, --max-requests at least 1")
    r = measure(args)
    print_report(r)
    if args.json:
        from _report import write_json

        write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
