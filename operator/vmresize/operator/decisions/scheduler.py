"""The scheduler: Nova-style filters, then weighers, over plain data.

Pure and fast: no Kubernetes, no pydantic in the hot loop. :func:`candidate_from_host`
(in :mod:`vmresize.operator.decisions.views`) turns a Host into a :class:`HostState`; this module
decides. Free resources follow Placement: ``(total - reserved) * ratio - allocated``.

Filters, in order (each removes hosts and is counted for ``NoValidHost``):
``ForcedHost``, ``Enabled``, ``Heartbeat`` (agent ready, and the operator saw its heartbeat
change within the stale window, on the operator's own clock: :mod:`.liveness`),
``SameHost`` (the source is excluded unless same-host resize is allowed; a cold migration
always excludes it), ``HostSelector`` (aggregate-style labels from the flavor's extra specs
``aggregate_instance_extra_specs:<label>=<value>``), ``VCPU``, ``RAM``, ``Disk``.

Weighers: free RAM (multiplier 1.0 by default), free vCPU, free disk; each normalised to
0..1 over the candidates (as Nova does) and multiplied. A negative multiplier packs.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FILTERS = ("ForcedHost", "Enabled", "Heartbeat", "SameHost", "HostSelector",
           "VCPU", "RAM", "Disk")


@dataclass(frozen=True, slots=True)
class HostState:
    """One host as the scheduler sees it. Sizes: vCPUs, MiB, GiB."""

    name: str
    enabled: bool = True
    ready: bool = True
    #: When the operator saw this host's heartbeat change, on its monotonic clock (None:
    #: never); compared with :attr:`Request.clock`, never with the agent's own stamp.
    heard: float | None = None
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0
    cpu_ratio: float = 4.0
    ram_ratio: float = 1.0
    disk_ratio: float = 1.0
    reserved_vcpus: int = 0
    reserved_memory_mib: int = 512
    reserved_disk_gib: int = 0
    used_vcpus: int = 0
    used_memory_mib: int = 0
    used_disk_gib: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    #: :meth:`free`, computed once (a state is made once per Host version and then read by
    #: every decision: 10,000 of them each time).
    free_now: tuple[float, float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "free_now", (
            (self.vcpus - self.reserved_vcpus) * self.cpu_ratio - self.used_vcpus,
            (self.memory_mib - self.reserved_memory_mib) * self.ram_ratio - self.used_memory_mib,
            (self.disk_gib - self.reserved_disk_gib) * self.disk_ratio - self.used_disk_gib))

    def free(self) -> tuple[float, float, float]:
        """Free vCPU, RAM MiB, disk GiB after ratios, reserved and allocations."""
        return self.free_now


@dataclass(frozen=True)
class Request:
    """What to place. ``source_host`` is where the instance runs now (None for a new one)."""

    vcpus: int
    memory_mib: int
    disk_gib: int
    #: The operator's monotonic clock now (the one :attr:`HostState.heard` is on).
    clock: float
    source_host: str | None = None
    allow_same_host: bool = False
    forced_host: str | None = None
    selector: Mapping[str, str] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()
    heartbeat_stale_seconds: float = 60.0
    max_alternates: int = 2


@dataclass(frozen=True)
class Weights:
    """Weigher multipliers for free RAM, vCPU and disk; a negative one packs instead of spreads."""

    ram: float = 1.0
    cpu: float = 0.0
    disk: float = 0.0


@dataclass(frozen=True)
class Selection:
    """The chosen host, the alternates to try if preparing it fails, and the best weighed hosts with
    their weights (for the status)."""

    host: str
    alternates: tuple[str, ...]
    weighed: tuple[tuple[str, float], ...]   # best first, at most 1 + max_alternates + 2


@dataclass(frozen=True)
class NoValidHost:
    """Every host was filtered out: how many hosts each filter removed, of ``total``."""

    counts: Mapping[str, int]   # hosts removed per filter, in FILTERS order
    total: int


def fits(h: HostState, vcpus: int, memory_mib: int, disk_gib: int) -> str | None:
    """The first resource filter ``h`` fails for this size, or None if it fits."""
    return _short(h.free(), vcpus, memory_mib, disk_gib)


def _short(free: tuple[float, float, float], vcpus: int, memory_mib: int,
           disk_gib: int) -> str | None:
    fc, fr, fd = free
    if vcpus > fc:
        return "VCPU"
    if memory_mib > fr:
        return "RAM"
    if disk_gib > fd:
        return "Disk"
    return None


def _rejected_before_resources(h: HostState, r: Request, stale_before: float) -> str | None:
    if r.forced_host is not None and h.name != r.forced_host:
        return "ForcedHost"
    if not h.enabled:
        return "Enabled"
    if not h.ready or h.heard is None or h.heard < stale_before:
        return "Heartbeat"
    if h.name in r.exclude or (h.name == r.source_host and not r.allow_same_host):
        return "SameHost"
    for k, v in r.selector.items():
        if h.labels.get(k) != v:
            return "HostSelector"
    return None


def _normalise(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0] * len(values)
    span = hi - lo
    return [(v - lo) / span for v in values]


def select(hosts: Sequence[HostState], req: Request, weights: Weights) -> Selection | NoValidHost:
    """Filter, weigh, and return the best host with its alternates, or NoValidHost.

    One pass over the hosts, each host's free resources computed once, and only the few
    best kept in order (not a sort of every candidate): at 100,000 hosts the time goes
    into touching that many objects, whose memory no longer fits the CPU's caches."""
    counts = dict.fromkeys(FILTERS, 0)
    # Heard before this is stale: (clock - heard) > stale seconds (liveness.stale, inline).
    stale_before = req.clock - req.heartbeat_stale_seconds
    passed: list[HostState] = []
    free: list[tuple[float, float, float]] = []
    # The common request (no forced host, no selector) skips those filters' per-host work.
    simple = req.forced_host is None and not req.selector
    for h in hosts:
        if simple:   # the same checks as _rejected_before_resources, inline
            if not h.enabled:
                why: str | None = "Enabled"
            elif not h.ready or h.heard is None or h.heard < stale_before:
                why = "Heartbeat"
            elif h.name in req.exclude or (h.name == req.source_host
                                           and not req.allow_same_host):
                why = "SameHost"
            else:
                why = None
        else:
            why = _rejected_before_resources(h, req, stale_before)
        if why is None:
            f = h.free_now
            why = _short(f, req.vcpus, req.memory_mib, req.disk_gib)
            if why is None:
                passed.append(h)
                free.append(f)
                continue
        counts[why] += 1
    if not passed:
        return NoValidHost(counts=counts, total=len(hosts))
    total = [0.0] * len(passed)
    for idx, mult in ((1, weights.ram), (0, weights.cpu), (2, weights.disk)):
        if mult:
            for i, n in enumerate(_normalise([f[idx] for f in free])):
                total[i] += mult * n
    # Best weight first; the name breaks ties so that the result is deterministic.
    keep = heapq.nsmallest(1 + req.max_alternates + 2, range(len(passed)),
                           key=lambda i: (-total[i], passed[i].name))
    weighed = tuple((passed[i].name, round(total[i], 4)) for i in keep)
    best = passed[keep[0]].name
    alternates = tuple(passed[i].name for i in keep[1: 1 + req.max_alternates])
    return Selection(host=best, alternates=alternates, weighed=weighed)


def selector_from_extra_specs(extra_specs: Mapping[str, str]) -> dict[str, str]:
    """Nova's AggregateInstanceExtraSpecsFilter keys, matched here against Host labels."""
    prefix = "aggregate_instance_extra_specs:"
    return {k[len(prefix):]: v for k, v in extra_specs.items() if k.startswith(prefix)}
