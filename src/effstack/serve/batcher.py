"""The dynamic batcher's pure core: policy, queue and the scheduling decision.

The core never looks at a clock, a thread or a socket. :func:`decide` takes the queue (in service
order), the time ``now`` and a :class:`BatchingPolicy`, and says which requests to launch as one
batch, which to drop because their deadline passed, and when to look again. :class:`BatchQueue`
holds the waiting requests (one FIFO per priority level) and enforces the bounded capacity.
:class:`effstack.serve.workers.Batcher` (the asyncio shell) calls :func:`decide` whenever something
changes — an arrival, a finished batch, a timer — and runs each launched batch on an idle instance.

Launch rules, for the batch formed from the head of the queue (at most ``batch_cap`` samples, stopping
at the first request that does not fit, so order is kept):

* the batch is full (or the next request cannot join it): launch now;
* fixed-delay mode (no budget): launch once the oldest request in it has waited ``max_queue_delay_s``
  (0, the default, launches at once: batches then form only from what queues while instances are busy);
* latency-budget mode: with ``L(b)`` the measured p99 compute time of a batch of ``b`` (interpolated), launch
  once the oldest request has waited as long as a full batch saves, ``cap L(1) - L(cap)``, but never longer
  than one batch's compute time ``L(cap)`` nor than keeps the budget if the batch then grew to ``batch_cap``
  (``usable_budget - L(cap)``): where batching saves little, requests hardly wait. ``batch_cap`` is the
  smallest batch whose cost per sample, ``L(b) / b``, is within 5% of the best among the batches with
  ``2 L(b) <= usable_budget`` (a request arriving just after a launch waits for that batch and then runs in the
  next).
  A larger batch would buy no throughput, only latency: on a CPU, where ``L`` grows about linearly, the cap is
  1 or 2 and requests launch as soon as an instance is free; on a GPU, where a batch of 64 costs little more
  than one of 8, the cap grows until the budget stops it. Admission stops at the queue depth the instances can
  clear in the budget that is left after one batch (``Q / rate + L(cap) <= budget``), so overload turns into
  fast 503s instead of a queue nobody can wait for, while bursts that the budget can absorb are still queued.
  The queue ahead is cleared at the *pace* batches really run, a moving average of their observed time over
  the curve's p99 (:meth:`BatchQueue.observe`; 1 until batches are seen): a sum of several batches is close
  to their mean, not to their p99 each, so at a steady pace of 0.9 a few more requests are admitted, and when
  batches slow down under load the depth shrinks with them; the request's own batch is still counted at its
  p99, never less. (``benchmarks/batcher_sim.py`` drives :func:`decide` with Poisson arrivals: against a
  ResNet-50 INT8 curve measured here, 2 instances of about 61 ms per sample, the highest rate within a 350 ms
  p99 and 1% refusals was 0.75x of the offline rate with these rules (0.80x failed on 1.1% refused; a fixed
  depth of 9 passed it), against about 0.4x with the earliest ones: the largest fitting batch as the cap,
  waiting up to the budget's edge, and a depth that also reserved a second batch);
* a request's own deadline also bounds the wait: launch by ``deadline - L(batch_cap)``;
* waiting must be able to pay (latency-budget mode, given the arrival rate): with ``r`` the samples/s arriving
  lately (:meth:`BatchQueue.arrival_rate`) and ``w`` the wait above (from the oldest request's arrival to its
  launch time), fewer than ``MIN_COMPANY`` samples expected in it, ``r w < 1``, launch now. A lone request at
  low load then never waits for company that will not come: with two streams, where a batch of 2 costs what one
  of 1 does, the wait above is a whole batch time, and 100 ms apart a ResNet-50 request spent it waiting for
  nobody (p50 23.8 ms against the engine's 8-10). Fixed-delay mode waits as told: the delay is the user's.

Requests past their deadline are dropped when reached, never computed.

Grouping by sequence length (text models; ``length_buckets`` set): a batch of token ids is padded to its
longest member, and a transformer's cost grows with the padded length (attention with its square), so one
paragraph of 250 tokens in a batch of 20-token queries makes every query cost 250 tokens. Each request
carries its length (:attr:`Pending.length`: its longest text in tokens) and falls in the bucket of the
first edge at or above it (edges such as 16, 32, 64, 128, 256: powers of two bound the padding of a batch
to under half of it, and a handful of buckets keeps each one dense enough to fill batches). The rules above
then apply per bucket, as if each bucket were its own queue under the same latency budget: the batch of a
bucket is its live requests in service order up to ``batch_cap``; among the buckets whose batch may launch
now (full, due, or not worth waiting for), the one whose oldest request comes first in service order is
launched, so a sparse bucket is never starved by a busy one; otherwise the batcher wakes at the earliest
bucket's launch time. Chosen over sort-and-split of the whole queue (sort the pending requests by length,
cut them into batches): that packs tighter at one instant, but every new arrival can reshuffle batches
and delay the oldest request again, and its launch time has no per-group meaning; fixed buckets keep each
request's wait bounded by the same rules as FIFO batching. Without buckets (images, or
``length_buckets=()``), the whole queue is one group: FIFO batches padded to their longest member.
(The arrival rate that decides whether waiting pays is the model's, not the bucket's: a sparse bucket may
wait for company up to the same bound as a busy one.)

>>> p = BatchingPolicy(max_batch=4)
>>> q = [Pending(id=i, n=1, arrival=0.0) for i in range(6)]
>>> [r.id for r in decide(q, now=0.0, policy=p).launch]
[0, 1, 2, 3]
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, InputError
from .errors import NotAccepting, QueueFull, RequestTimeout

__all__ = [
    "BatchQueue",
    "BatchingPolicy",
    "Decision",
    "NotAccepting",
    "Pending",
    "QueueFull",
    "RequestTimeout",
    "decide",
    "expired_head",
    "interpolate",
    "waiting_pays",
]


EFFICIENCY_TOLERANCE = 0.05  # the batch cap: the smallest batch within this of the best cost per sample
PACE_WEIGHT = 0.1  # weight of the newest batch in the moving average of observed / predicted compute time
MIN_PACE = 0.5  # the queue is never assumed to clear faster than twice the curve's p99 pace
MAX_HORIZON = 10.0  # admission may look at most this many budgets ahead (beyond it: a queue, not a budget)
TOLERANCE_S = 1e-6  # timers fire up to a clock tick early, and float sums are not exact: launch within this
MIN_COMPANY = 1.0  # budget mode waits for company only when at least this many samples are expected meanwhile
RATE_WINDOW = 16  # the arrival rate is estimated over the last this many arrivals


def interpolate(curve: Mapping[int, float], batch: float) -> float:
    """Latency of ``batch`` from a measured ``{batch: seconds}`` curve, linear between points.

    Below the smallest measured batch the smallest point's latency is used; beyond the largest, the
    line through the last two points is extended (one point: proportional to the batch).

    Raises:
        ConfigError: the curve is empty.

    Example:
        >>> interpolate({1: 0.010, 4: 0.025}, 2)
        0.015
    """
    if not curve:
        raise ConfigError("the latency curve is empty; measure at least one batch size")
    xs = sorted(curve)
    ys = [float(curve[x]) for x in xs]
    if batch <= xs[0]:
        return ys[0]
    if batch >= xs[-1]:
        if len(xs) == 1:
            return ys[0] * batch / xs[0]
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return ys[-1] + max(slope, 0.0) * (batch - xs[-1])
    i = bisect_left(xs, batch)
    if xs[i] == batch:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return round(y0 + (y1 - y0) * (batch - x0) / (x1 - x0), 12)


@dataclass(frozen=True)
class BatchingPolicy:
    """How the batcher forms batches.

    max_batch: the largest batch, counted in samples (a request may carry several).
    max_queue_delay_s: how long the oldest request may wait for the batch to fill (None: 0 without a
        budget; with a budget, only the budget limits the wait).
    latency_budget_s: the p99 latency target; enables latency-budget mode (needs ``latency_curve``).
    latency_curve: measured p99 compute seconds per batch size, ``{1: 0.004, 8: 0.020, ...}``; predictions
        use its running maximum, so a noisy point cannot make a larger batch look cheaper.
    queue_capacity: samples that may wait (not yet launched); beyond it requests are refused (503).
    instances: engine sessions working in parallel (used to size the budget-mode queue).
    budget_slack: fraction of the budget kept back for HTTP, parsing and scheduling jitter.
    admission_horizon: budget mode: a request is admitted while it is predicted to finish within this many
        budgets. 1 refuses every request predicted to miss the budget; above 1 the queue absorbs short bursts
        (Poisson arrivals well under capacity), whose few late answers a p99 budget allows (1% may be late),
        and refuses only when the queue would take longer, as under sustained overload.
    priority_levels: request priorities are 1 (most urgent) .. ``priority_levels``; 0 means the default.
    default_priority: the level of requests that give no priority (default: the lowest).
    length_buckets: increasing upper edges in tokens; requests are batched only with others of their bucket
        (:meth:`bucket`). Empty: no grouping.

    Raises:
        ConfigError: a value out of range, or a budget without a curve.
    """

    max_batch: int = 8
    max_queue_delay_s: float | None = None
    latency_budget_s: float | None = None
    latency_curve: Mapping[int, float] | None = None
    queue_capacity: int = 256
    instances: int = 1
    budget_slack: float = 0.1
    admission_horizon: float = 1.0
    priority_levels: int = 1
    default_priority: int | None = None
    length_buckets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        buckets = tuple(int(e) for e in self.length_buckets)
        if any(e < 1 for e in buckets) or list(buckets) != sorted(set(buckets)):
            raise ConfigError(f"length buckets must be increasing token counts >= 1, got {list(self.length_buckets)}")
        object.__setattr__(self, "length_buckets", buckets)
        if self.max_batch < 1:
            raise ConfigError(f"max batch must be at least 1, got {self.max_batch}")
        if self.max_queue_delay_s is not None and self.max_queue_delay_s < 0:
            raise ConfigError(f"max queue delay must be >= 0, got {self.max_queue_delay_s}")
        if self.latency_budget_s is not None:
            if not self.latency_budget_s > 0:
                raise ConfigError(f"latency budget must be positive, got {self.latency_budget_s}")
            if not self.latency_curve:
                raise ConfigError("latency-budget mode needs the latency-per-batch curve; measure it at load")
        if self.latency_curve is not None:
            curve = {int(b): float(s) for b, s in self.latency_curve.items()}
            if any(b < 1 or not s >= 0 for b, s in curve.items()):
                raise ConfigError(f"latency curve must map batch >= 1 to seconds >= 0, got {curve}")
            object.__setattr__(self, "latency_curve", curve)
            # a bigger batch never takes less time: smooth measurement noise with a running maximum
            envelope, worst = {}, 0.0
            for b in sorted(curve):
                worst = max(worst, curve[b])
                envelope[b] = worst
            object.__setattr__(self, "_envelope", envelope)
        if self.queue_capacity < 1:
            raise ConfigError(f"queue capacity must be at least 1 sample, got {self.queue_capacity}")
        if self.instances < 1:
            raise ConfigError(f"instances must be at least 1, got {self.instances}")
        if not 0 <= self.budget_slack < 1:
            raise ConfigError(f"budget slack must be within [0, 1), got {self.budget_slack}")
        if not 1 <= self.admission_horizon <= MAX_HORIZON:
            raise ConfigError(f"admission horizon must be within 1..{MAX_HORIZON:g} budgets, "
                              f"got {self.admission_horizon}")
        if self.priority_levels < 1:
            raise ConfigError(f"priority levels must be at least 1, got {self.priority_levels}")
        default = self.priority_levels if self.default_priority is None else self.default_priority
        if not 1 <= default <= self.priority_levels:
            raise ConfigError(f"default priority must be within 1..{self.priority_levels}, got {default}")
        object.__setattr__(self, "default_priority", default)
        # derived once: the effective batch cap and the admission limit (plain attributes, frozen)
        object.__setattr__(self, "_cap", self._compute_cap())
        object.__setattr__(self, "_cap_latency", self.latency(self._cap))  # type: ignore[attr-defined]
        object.__setattr__(self, "_limit", self._compute_limit())
        object.__setattr__(self, "_wait", self._compute_wait())

    # --- derived quantities ---------------------------------------------------------------------

    def bucket(self, length: int) -> int:
        """The length bucket of a request ``length`` tokens long: the index of the first edge >= it (past the last
        edge: the last bucket; without buckets: 0).

        Example:
            >>> p = BatchingPolicy(length_buckets=(16, 32, 64))
            >>> [p.bucket(n) for n in (1, 16, 17, 64, 300)]
            [0, 0, 1, 2, 2]
        """
        edges = self.length_buckets
        if not edges:
            return 0
        return min(bisect_left(edges, length), len(edges) - 1)

    @property
    def usable_budget_s(self) -> float | None:
        return None if self.latency_budget_s is None else self.latency_budget_s * (1 - self.budget_slack)

    def latency(self, batch: float) -> float:
        """Predicted p99 compute seconds of a batch (0 without a curve), from the curve's rising envelope."""
        return interpolate(self._envelope, batch) if self.latency_curve else 0.0  # type: ignore[attr-defined]

    @property
    def batch_cap(self) -> int:
        """The largest batch the batcher forms (``max_batch``, or less where the budget demands)."""
        return self._cap  # type: ignore[attr-defined]

    @property
    def cap_latency_s(self) -> float:
        """``L(batch_cap)``: the predicted p99 compute seconds of a full batch (0 without a curve)."""
        return self._cap_latency  # type: ignore[attr-defined]

    @property
    def admission_limit(self) -> int:
        """Samples that may wait before new requests are refused."""
        return self._limit  # type: ignore[attr-defined]

    def _compute_cap(self) -> int:
        usable = self.usable_budget_s
        if usable is None:
            return self.max_batch
        fitting = [b for b in range(1, self.max_batch + 1) if 2 * self.latency(b) <= usable]
        if not fitting:
            return 1
        cost = {b: self.latency(b) / b for b in fitting}  # seconds per sample
        best = min(cost.values())
        return min(b for b in fitting if cost[b] <= best * (1 + EFFICIENCY_TOLERANCE) + 1e-15)

    def admission_limit_at(self, pace: float) -> int:
        """The admission limit when batches take ``pace`` times the curve's p99 on average.

        The queue ahead of a request is cleared at ``pace`` (never below ``MIN_PACE``); the request's own batch
        counts at its p99, or more when ``pace`` is above 1. Under overload the HTTP work of the requests being
        refused takes CPU from the engine, batches run slower than the curve measured at load, and the queue
        that still clears within the budget is shorter. Example: ``admission_limit_at(1.0) == admission_limit``.
        """
        if pace == 1.0:
            return self.admission_limit
        return self._compute_limit(pace)

    def _compute_limit(self, pace: float = 1.0) -> int:
        usable = self.usable_budget_s
        if usable is None:
            return self.queue_capacity
        cap = self.batch_cap
        per_batch = max(self.cap_latency_s, 1e-9)
        pace = max(pace, MIN_PACE)
        # a request admitted behind Q samples waits ~Q / rate for them, then its own batch runs, and should
        # still be done within the budget (the slack is for jitter at normal load, not for a full queue),
        # or within ``admission_horizon`` budgets: Q / (instances * cap / (pace L)) + max(1, pace) L <= H budget
        horizon = self.latency_budget_s * self.admission_horizon
        depth = math.floor((horizon - per_batch * max(1.0, pace)) * self.instances * cap / (per_batch * pace))
        return max(cap, min(self.queue_capacity, depth))

    @property
    def max_wait_s(self) -> float | None:
        """Budget mode: how long the oldest request may wait for company (None without a budget)."""
        return self._wait  # type: ignore[attr-defined]

    def _compute_wait(self) -> float | None:
        usable = self.usable_budget_s
        if usable is None:
            return None
        # wait for company no longer than the compute a full batch saves over running its samples one by one,
        # and at most one batch's compute time (by then an instance that launched at once would be free
        # again). Waiting up to the budget's edge left no room for jitter: p99 sat at the budget at low load.
        per_batch = self.cap_latency_s
        saving = max(0.0, self.batch_cap * self.latency(1) - per_batch)
        return min(usable - per_batch, per_batch, saving)

    def level(self, priority: int | None) -> int:
        """The queue level of a request priority (0/None: the default).

        Raises:
            InputError: a priority outside 0..``priority_levels``.
        """
        if not priority:
            return self.default_priority  # type: ignore[return-value]
        if not 1 <= priority <= self.priority_levels:
            raise InputError(
                f"priority must be within 1..{self.priority_levels} (1 is the most urgent) or 0 for the default, "
                f"got {priority}"
            )
        return int(priority)

    def throughput(self) -> float | None:
        """Samples/s at ``batch_cap`` over all instances, from the curve (None without one)."""
        if not self.latency_curve:
            return None
        return self.instances * self.batch_cap / max(self.cap_latency_s, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        if self.latency_curve is not None:
            d["latency_curve"] = {str(b): s for b, s in sorted(self.latency_curve.items())}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BatchingPolicy:
        d = dict(d)
        if d.get("latency_curve") is not None:
            d["latency_curve"] = {int(b): float(s) for b, s in d["latency_curve"].items()}
        return cls(**d)


@dataclass(eq=False)
class Pending:
    """One request waiting in the queue. ``payload``/``future`` belong to the shell; the core ignores them."""

    id: int
    n: int
    arrival: float
    deadline: float | None = None
    level: int = 1
    payload: Any = field(default=None, repr=False)
    future: Any = field(default=None, repr=False)
    trace: Any = field(default=None, repr=False)
    cancelled: bool = False
    launched: bool = False
    length: int = 0  # text: the longest of its texts in tokens (its padded width); 0 for other inputs
    tokens: int = 0  # text: its real (non-padding) tokens, for the padding metrics


@dataclass(frozen=True)
class Decision:
    """What to do now: launch these requests as one batch, drop these, look again at ``wake_at``."""

    launch: tuple[Pending, ...] = ()
    expired: tuple[Pending, ...] = ()
    wake_at: float | None = None

    @property
    def samples(self) -> int:
        return sum(p.n for p in self.launch)


def decide(queue: Iterable[Pending], now: float, policy: BatchingPolicy,
           arrival_rate: float | None = None) -> Decision:
    """The scheduling decision: a pure function of the queue (in service order), the time, the policy and the
    arrival rate.

    Walks the queue from its head: cancelled requests and those past their deadline go to ``expired``;
    live ones join the batch until it holds ``batch_cap`` samples or the next one does not fit (a lone
    request larger than the cap is launched alone). Then applies the launch rules of the module
    docstring. ``wake_at`` is the time the batch must be launched if nothing else happens first
    (None when the queue holds nothing live). ``arrival_rate`` is the samples/s arriving lately
    (:meth:`BatchQueue.arrival_rate`); None means unknown, and the batch then waits as if company were
    certain to come.

    Example:
        >>> p = BatchingPolicy(max_batch=8, max_queue_delay_s=0.010)
        >>> d = decide([Pending(id=0, n=2, arrival=1.0)], now=1.004, policy=p)
        >>> (d.launch, d.wake_at)
        ((), 1.01)
    """
    if policy.length_buckets:
        return _decide_grouped(queue, now, policy, arrival_rate)
    cap = policy.batch_cap
    expired: list[Pending] = []
    batch: list[Pending] = []
    samples = 0
    full = False
    for p in queue:
        if p.cancelled or (p.deadline is not None and p.deadline <= now):
            expired.append(p)
            continue
        if batch and samples + p.n > cap:
            full = True
            break
        batch.append(p)
        samples += p.n
        if samples >= cap:
            full = True
            break
    if not batch:
        return Decision(expired=tuple(expired))
    if full:
        return Decision(launch=tuple(batch), expired=tuple(expired))
    launch_at = _launch_time(batch, policy)
    if now + TOLERANCE_S >= launch_at or not waiting_pays(batch, launch_at, policy, arrival_rate):
        return Decision(launch=tuple(batch), expired=tuple(expired))
    return Decision(expired=tuple(expired), wake_at=launch_at)


def _decide_grouped(queue: Iterable[Pending], now: float, policy: BatchingPolicy,
                    arrival_rate: float | None) -> Decision:
    """:func:`decide` with length buckets: one candidate batch per bucket (see the module docstring).

    Example:
        >>> p = BatchingPolicy(max_batch=2, length_buckets=(16, 64))
        >>> q = [Pending(id=0, n=1, arrival=0.0, length=50), Pending(id=1, n=1, arrival=0.0, length=9),
        ...      Pending(id=2, n=1, arrival=0.0, length=12), Pending(id=3, n=1, arrival=0.0, length=60)]
        >>> [r.id for r in decide(q, now=0.0, policy=p).launch]
        [0, 3]
    """
    cap = policy.batch_cap
    expired: list[Pending] = []
    groups: dict[int, list[Pending]] = {}  # in service order of each bucket's first live request
    samples: dict[int, int] = {}
    full: set[int] = set()
    for p in queue:
        if p.cancelled or (p.deadline is not None and p.deadline <= now):
            expired.append(p)
            continue
        b = policy.bucket(p.length)
        if b in full:
            continue
        batch = groups.setdefault(b, [])
        if batch and samples[b] + p.n > cap:
            full.add(b)
            continue
        batch.append(p)
        samples[b] = samples.get(b, 0) + p.n
        if samples[b] >= cap:
            full.add(b)
    wake: float | None = None
    for b, batch in groups.items():
        if b in full:
            return Decision(launch=tuple(batch), expired=tuple(expired))
        launch_at = _launch_time(batch, policy)
        if now + TOLERANCE_S >= launch_at or not waiting_pays(batch, launch_at, policy, arrival_rate):
            return Decision(launch=tuple(batch), expired=tuple(expired))
        wake = launch_at if wake is None else min(wake, launch_at)
    return Decision(expired=tuple(expired), wake_at=wake)


def waiting_pays(batch: Sequence[Pending], launch_at: float, policy: BatchingPolicy,
                 arrival_rate: float | None) -> bool:
    """Whether holding ``batch`` until ``launch_at`` can gain it company: in latency-budget mode, only when at
    least ``MIN_COMPANY`` samples are expected to arrive over the wait (from its oldest request's arrival), at
    ``arrival_rate`` samples/s. Fixed-delay mode (the user's delay) and an unknown rate (None) always wait.

    Example:
        >>> p = BatchingPolicy(max_batch=2, latency_budget_s=0.05, latency_curve={1: 0.010, 2: 0.0105})
        >>> q = [Pending(id=0, n=1, arrival=0.0)]
        >>> waiting_pays(q, 0.0095, p, arrival_rate=10.0), waiting_pays(q, 0.0095, p, arrival_rate=200.0)
        (False, True)
    """
    if arrival_rate is None or policy.max_wait_s is None:
        return True
    window = launch_at - min(p.arrival for p in batch)
    return arrival_rate * window >= MIN_COMPANY


def _launch_time(batch: Sequence[Pending], policy: BatchingPolicy) -> float:
    oldest = min(p.arrival for p in batch)
    wait = policy.max_wait_s
    delay = policy.max_queue_delay_s
    if wait is None:
        t = oldest + (delay or 0.0)
    else:
        t = oldest + wait
        if delay is not None:
            t = min(t, oldest + delay)
    deadlines = [p.deadline for p in batch if p.deadline is not None]
    if deadlines:
        t = min(t, min(deadlines) - policy.cap_latency_s)
    return t


class BatchQueue:
    """Waiting requests, one FIFO per priority level, bounded in samples. No clocks, no threads.

    Example:
        >>> q = BatchQueue(BatchingPolicy(max_batch=4, queue_capacity=4))
        >>> q.admit(Pending(id=0, n=3, arrival=0.0)); q.samples
        3
    """

    def __init__(self, policy: BatchingPolicy):
        self.policy = policy
        self._levels: list[deque[Pending]] = [deque() for _ in range(policy.priority_levels)]
        self.samples = 0
        self.pace = 1.0  # observed compute time / the curve's p99, a moving average (1 until batches are seen)
        self.limit = policy.admission_limit  # samples that may wait now (follows the pace)
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW)  # (arrival, samples), admitted or not

    def observe(self, samples: int, compute_s: float) -> None:
        """A batch of ``samples`` took ``compute_s``: move the pace towards it and re-derive the admission limit.

        Example:
            >>> q = BatchQueue(BatchingPolicy(max_batch=1, latency_budget_s=0.05, latency_curve={1: 0.004}))
            >>> q.limit, q.observe(1, 0.008), round(q.pace, 2), q.limit
            (11, None, 1.1, 10)
        """
        predicted = self.policy.latency(samples)
        if predicted <= 0 or self.policy.latency_budget_s is None or not compute_s >= 0:
            return
        self.pace += PACE_WEIGHT * (compute_s / predicted - self.pace)
        self.limit = self.policy.admission_limit_at(self.pace)

    def arrival_rate(self, now: float) -> float:
        """Samples/s arriving lately: the samples of the last ``RATE_WINDOW`` arrivals after the first of them,
        over the time from that first one to ``now`` (so the rate falls while nothing arrives). 0 until two
        requests have arrived.

        Example:
            >>> q = BatchQueue(BatchingPolicy(max_batch=4))
            >>> for i in range(3):
            ...     q.admit(Pending(id=i, n=1, arrival=0.1 * i)); q.apply(decide(q, 0.1 * i, q.policy))
            >>> round(q.arrival_rate(0.2), 6), round(q.arrival_rate(0.4), 6)
            (10.0, 5.0)
        """
        arrivals = self._arrivals
        if len(arrivals) < 2:
            return 0.0
        span = now - arrivals[0][0]
        later = sum(n for _, n in arrivals) - arrivals[0][1]
        return later / span if span > 0 else math.inf

    def __iter__(self) -> Iterator[Pending]:
        for level in self._levels:
            yield from level

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def full(self) -> bool:
        return self.samples >= self.limit

    def admit(self, p: Pending) -> None:
        """Queue ``p`` or refuse it.

        Raises:
            InputError: ``p`` carries more samples than ``max_batch`` or none.
            QueueFull: admitting it would pass the admission limit.
        """
        if not 1 <= p.n <= self.policy.max_batch:
            raise InputError(f"a request must carry 1..{self.policy.max_batch} samples (the max batch), got {p.n}")
        self._arrivals.append((p.arrival, p.n))  # refused ones count too: they are load all the same
        limit = self.limit
        if self.samples + p.n > limit and self.samples > 0:
            raise QueueFull(
                f"the server is overloaded: {self.samples} samples already queued (limit {limit}); retry later",
                retry_after_s=self.retry_after_s(),
            )
        self._levels[p.level - 1].append(p)
        self.samples += p.n

    def retry_after_s(self) -> float:
        """About how long the queue takes to clear, from the curve (1 s when unknown)."""
        rate = self.policy.throughput()
        return max(1.0, self.samples / rate) if rate else 1.0

    def cancel(self, p: Pending) -> None:
        """Mark a waiting request cancelled (its client gave up); it stops counting against capacity."""
        if not p.cancelled and not p.launched:
            p.cancelled = True
            self.samples -= p.n

    def apply(self, decision: Decision) -> None:
        """Remove the decision's launched and expired requests from the queue."""
        gone = set(map(id, decision.launch + decision.expired))
        if not gone:
            return
        for p in decision.expired:
            if not p.cancelled:
                self.samples -= p.n
            p.cancelled = True
        for p in decision.launch:
            p.launched = True
            self.samples -= p.n
        for i, level in enumerate(self._levels):
            # decisions take from the head: pop the prefix, rebuild only when an item further back left
            while level and id(level[0]) in gone:
                gone.discard(id(level.popleft()))
            if gone and any(id(p) in gone for p in level):
                self._levels[i] = deque(p for p in level if id(p) not in gone)


def expired_head(queue: Iterable[Pending], now: float) -> Decision:
    """The decision while every instance is busy: nothing launches; the expired head of the queue is dropped."""
    expired = []
    for p in queue:
        if p.cancelled or (p.deadline is not None and p.deadline <= now):
            expired.append(p)
        else:
            break
    return Decision(expired=tuple(expired))
