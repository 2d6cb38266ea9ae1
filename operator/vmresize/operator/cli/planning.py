"""``plan``: what a resize would do, decided by the operator's own pure scheduler.

Nothing here talks to the API: the caller reads the Instance, the Flavor, the Hosts and the
recent VMResizes, and :func:`make_plan` answers with the host the scheduler would pick (and
why: each host's free resources, weight or the filter that removed it; per-filter counts
when none fits), the data to move, and a prediction from what recent resizes measured,
capped by the bandwidth limit the copy would run under (the lowest of ``--bandwidth`` and
both hosts' ``migrationBandwidthMiBps``, as the operator computes it).

The request is built as the operator builds it (``reconcile.scheduling``), from settings
read the same way (``VMRESIZE_*`` variables, else the operator's defaults); a cluster whose
operator runs with other settings can be matched by exporting the same variables. The
claims other resizes may take between the plan and a real resize are not foreseen.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vmresize.api.flavor import Flavor
from vmresize.api.host import Host
from vmresize.api.instance import Instance, InstancePhase, InstanceStatus
from vmresize.api.resize import ResizePhase, VMResize
from vmresize.operator.decisions.bandwidth import Limit, effective
from vmresize.operator.decisions.scheduler import (
    FILTERS,
    HostState,
    NoValidHost,
    Request,
    Selection,
    Weights,
    select,
    selector_from_extra_specs,
)
from vmresize.operator.decisions.views import host_state
from vmresize.operator.settings import Settings

#: Phases a resize reaches only after its disk copy finished (its rate and downtime count).
COPIED = frozenset({ResizePhase.FINISHING, ResizePhase.VERIFY_RESIZE, ResizePhase.CONFIRMING,
                    ResizePhase.CONFIRMED, ResizePhase.REVERTING, ResizePhase.REVERTED})


#: Sorts before every real timestamp.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class History:
    """What the last ``count`` finished disk copies measured (medians; None: none had it)."""

    count: int
    rate_bytes_per_second: float | None
    downtime_seconds: float | None
    power_off_wait_seconds: float | None = None
    """How long the guests took to go off after the request (running meanwhile)."""


@dataclass(frozen=True)
class HostVerdict:
    """One host as the scheduler judged it: free resources after claims, and the outcome."""

    name: str
    free: tuple[float, float, float]
    removed_by: str | None
    weight: float | None


@dataclass(frozen=True)
class Plan:
    """What a resize of ``instance`` to ``flavor`` would do."""

    instance: str
    source_host: str | None
    old_flavor: str | None
    flavor: str
    cold: bool
    refused: str | None
    """Why the operator would refuse it at Pending; None when it would not."""
    outcome: Selection | NoValidHost | None
    hosts: list[HostVerdict] = field(default_factory=list)
    virtual_gib: int | None = None
    moved_bytes: int | None = None
    """Allocated bytes the last finished move of this instance sent (None: never moved)."""
    moved_at: datetime | None = None
    history: History = History(0, None, None)
    weighers: str = ""
    """The weigher multipliers in effect, e.g. ``free RAM x1``."""
    limit: Limit = field(default_factory=lambda: Limit(None))
    """The bandwidth limit the copy would run under (MiB/s; None: unlimited)."""

    @property
    def rate(self) -> float | None:
        """The rate to predict with: the median measured one, capped by the limit (the
        limit alone when nothing was measured: then the prediction is a lower bound)."""
        measured = self.history.rate_bytes_per_second
        cap = self.limit.mibps * 1024 * 1024 if self.limit.mibps else None
        if measured and cap:
            return min(measured, cap)
        return measured or cap

    @property
    def copy_seconds(self) -> float | None:
        """Predicted copy time: the last move's bytes at :attr:`rate`."""
        rate = self.rate
        if self.moved_bytes is None or not rate:
            return None
        return self.moved_bytes / rate

    @property
    def bound_seconds(self) -> float | None:
        """Upper bound of the copy time: the whole virtual size at :attr:`rate`."""
        rate = self.rate
        if self.virtual_gib is None or not rate:
            return None
        return self.virtual_gib * 1024 ** 3 / rate


def _finished_at(r: VMResize) -> datetime:
    st = r.status
    stamps = st.phase_timestamps if st else {}
    return stamps.get(ResizePhase.FINISHING.value) or max(stamps.values(),
                                                            default=EPOCH)


def copies(resizes: Sequence[VMResize]) -> list[VMResize]:
    """The resizes whose disk copy finished, newest first."""
    done = [r for r in resizes if r.status and r.status.phase in COPIED
            and ResizePhase.FINISHING.value in r.status.phase_timestamps]
    return sorted(done, key=_finished_at, reverse=True)


def history(resizes: Sequence[VMResize], last: int) -> History:
    """Medians of the rate and downtime the ``last`` newest finished copies measured.
    The rate of copies that ran under a bandwidth limit measured the limit, not the
    network: they count only when no unlimited copy measured a rate."""
    recent = copies(resizes)[:last]
    ran = [r.status.progress for r in recent
           if r.status and r.status.progress.rate_bytes_per_second > 0]
    rates = [p.rate_bytes_per_second for p in ran if not p.limit_bytes_per_second] or [
        p.rate_bytes_per_second for p in ran]
    downs = [r.status for r in recent if r.status and r.status.downtime_seconds is not None]
    # An older operator counted the wait for the guest (the whole grace period of one that
    # ignores ACPI) as downtime: its figure is used only when no copy measured the stop.
    measured = [st for st in downs if st.stopped_at is not None] or downs
    waits = [r.status.power_off_wait_seconds for r in recent
             if r.status and r.status.power_off_wait_seconds is not None]
    return History(count=len(recent),
                   rate_bytes_per_second=statistics.median(rates) if rates else None,
                   downtime_seconds=statistics.median(
                       [st.downtime_seconds or 0.0 for st in measured]) if measured else None,
                   power_off_wait_seconds=statistics.median(waits) if waits else None)


def _refusal(inst: Instance, flavor: Flavor) -> str | None:
    """What the operator's Pending check would say (``reconcile.engine``), or None."""
    ist = inst.status or InstanceStatus()
    if ist.active_resize:
        return f"InstanceBusy: VMResize {ist.active_resize} is resizing {inst.name}"
    if ist.phase is not InstancePhase.ACTIVE or not ist.host:
        return f"InstanceNotReady: Instance {inst.name} is {ist.phase.value}, not Active on a host"
    if ist.disk_gib is not None and flavor.spec.disk_gib < ist.disk_gib:
        return (f"DiskShrink: Flavor {flavor.name} has a {flavor.spec.disk_gib} GiB disk but "
                f"the instance has {ist.disk_gib} GiB; a resize never shrinks a disk")
    return None


def make_plan(inst: Instance, flavor: Flavor, forced: str | None, hosts: Sequence[Host],
              resizes: Sequence[VMResize], settings: Settings, now: datetime,
              last: int = 10, bandwidth_mibps: int | None = None) -> Plan:
    """Judge a resize of ``inst`` to ``flavor`` (the current one: a cold migration);
    ``bandwidth_mibps``: the resize's own limit (``spec.bandwidthMiBps``)."""
    ist = inst.status or InstanceStatus()
    cold = flavor.name == ist.flavor
    res = flavor.spec.resources()
    req = Request(vcpus=res.vcpus, memory_mib=res.memory_mib, disk_gib=res.disk_gib,
                  clock=0.0, source_host=ist.host,
                  allow_same_host=settings.allow_resize_to_same_host and not cold,
                  forced_host=forced,
                  selector=selector_from_extra_specs(flavor.spec.extra_specs),
                  exclude=frozenset({ist.host}) if cold and ist.host else frozenset(),
                  heartbeat_stale_seconds=settings.heartbeat_stale_seconds,
                  max_alternates=settings.max_attempts - 1)
    weights = Weights(ram=settings.ram_weight_multiplier, cpu=settings.cpu_weight_multiplier,
                      disk=settings.disk_weight_multiplier)
    # A one-shot plan has watched no heartbeat change (issue 18, finding 4: never read an
    # agent's stamp as a time): it trusts the Ready verdict the operator keeps, and a Host
    # that has beaten at all counts as heard now.
    states = [host_state(h, 0.0 if h.status and h.status.heartbeat else None) for h in hosts]
    outcome = select(states, req, weights)
    weighed = dict(outcome.weighed) if isinstance(outcome, Selection) else {}
    mine = [r for r in copies(resizes) if r.namespace == inst.namespace
            and r.spec.instance_name == inst.name and r.status
            and r.status.progress.bytes_total > 0]
    return Plan(
        instance=inst.name, source_host=ist.host, old_flavor=ist.flavor, flavor=flavor.name,
        cold=cold, refused=_refusal(inst, flavor), outcome=outcome,
        hosts=[HostVerdict(s.name, s.free(), _removed_by(s, req, weights),
                           weighed.get(s.name)) for s in states],
        virtual_gib=ist.disk_gib,
        moved_bytes=mine[0].status.progress.bytes_total if mine and mine[0].status else None,
        moved_at=_finished_at(mine[0]) if mine else None,
        history=history(resizes, last),
        weighers=", ".join(f"{what} x{m:g}" for what, m in (
            ("free RAM", weights.ram), ("free vCPU", weights.cpu), ("free disk", weights.disk))
            if m) or "none",
        limit=_limit(bandwidth_mibps, hosts, ist.host,
                     outcome.host if isinstance(outcome, Selection) else None))


def _limit(asked: int | None, hosts: Sequence[Host], source: str | None,
           dest: str | None) -> Limit:
    """The limit the copy would run under, as the operator computes it for MigrateDisk."""
    by_name = {h.name: h.spec.migration_bandwidth_mibps for h in hosts}
    return effective(asked, (source or "", by_name.get(source or "")),
                     (dest or "", by_name.get(dest or "")))


def _removed_by(s: HostState, req: Request, weights: Weights) -> str | None:
    """The filter that removes this one host, from the scheduler's own counts."""
    alone = select([s], req, weights)
    if isinstance(alone, Selection):
        return None
    return next((f for f in FILTERS if alone.counts.get(f)), None)
