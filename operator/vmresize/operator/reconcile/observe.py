"""What one step of a VMResize looks at before it decides (the snapshot of the engine's beat).

:func:`observe` reads what the resize's phase needs and turns it into the
:class:`~vmresize.operator.decisions.lifecycle.Observation` the lifecycle table decides
on: in Pending, whether the request is sound (and both flavors, snapshotted); in
Scheduling, the scheduler's choice; in a task phase, the current HostTask and the step
watchdog's view of it, on the operator's own clock; in VerifyResize, the user's word,
the health check, or whether the destination's agent can vouch for an auto-confirm.
Before all of these, the user's ``spec.cancel``.
Reads only: nothing is written here (:mod:`.engine` records, then acts).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import HostTask, TaskPhase
from vmresize.api.instance import InstancePhase, InstanceStatus
from vmresize.api.resize import (
    ABANDONABLE_PHASES,
    CANCELLABLE_PHASES,
    ResizePhase,
    VMResize,
    VMResizeStatus,
)
from vmresize.operator.decisions import lifecycle, liveness, watchdog
from vmresize.operator.decisions.lifecycle import Kind, Observation, StatusPatch
from vmresize.operator.decisions.quota import QUOTA_EXCEEDED
from vmresize.operator.decisions.resize_step import running_flavor
from vmresize.operator.persistence import claims, quota
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile import scheduling
from vmresize.operator.reconcile.scheduling import resize_charge
from vmresize.operator.settings import Settings

P = ResizePhase


def _orphan(r: VMResize, st: VMResizeStatus, now: datetime) -> OrphanCopy | None:
    """The destination's copy as an abandonment records it (None: no destination yet)."""
    if not st.dest_host or not st.dest_domain_name or not st.dest_disk_path:
        return None
    return OrphanCopy(host=st.dest_host, owner=f"{r.namespace}/{r.name}", owner_uid=r.uid,
                      domain_name=st.dest_domain_name, disk_path=st.dest_disk_path,
                      disk_dir=posixpath.dirname(st.dest_disk_path), abandoned_at=now)


def _validate(storage: Storage, r: VMResize) -> tuple[Observation, StatusPatch]:
    """Pending: the request is sound; snapshot both flavors (nothing is written here)."""
    inst = storage.instance(r.namespace, r.spec.instance_name)
    refused = scheduling.lock_refused(inst, r)
    if inst is None or (refused is not None and refused.reason != "InstanceNotReady"):
        assert refused is not None
        return refused, {}
    ist = inst.status or InstanceStatus()
    if ist.phase in (InstancePhase.PENDING, InstancePhase.BUILDING):
        return Observation(Kind.TICK), {}   # applied together with its instance: wait
    if ist.phase is not InstancePhase.ACTIVE or not ist.host:
        return Observation(Kind.INVALID, "InstanceNotReady",
                           f"Instance {inst.name} is not Active on a host"), {}
    running = storage.flavor(ist.flavor) if ist.flavor else None
    base = running.spec if running else running_flavor(ist)
    # What the VM really runs with wins over what its flavor says today.
    old = base.model_copy(update={k: v for k, v in (
        ("vcpus", ist.vcpus), ("memory_mib", ist.memory_mib), ("disk_gib", ist.disk_gib))
        if v})
    new = old
    if r.spec.flavor and r.spec.flavor != ist.flavor:
        target = storage.flavor(r.spec.flavor)
        if target is None:
            return Observation(Kind.INVALID, "FlavorNotFound",
                               f"Flavor {r.spec.flavor} does not exist"), {}
        new = target.spec
        if ist.disk_gib is not None and new.disk_gib < ist.disk_gib:
            return Observation(Kind.INVALID, "DiskShrink", f"Flavor {r.spec.flavor} has a "
                               f"{new.disk_gib} GiB disk but the instance has "
                               f"{ist.disk_gib} GiB; a resize never shrinks a disk"), {}
        if new.ephemeral_gib < old.ephemeral_gib:   # Nova refuses this too
            return Observation(Kind.INVALID, "EphemeralShrink", f"Flavor {r.spec.flavor} "
                               f"has a {new.ephemeral_gib} GiB ephemeral disk but the instance "
                               f"has {old.ephemeral_gib} GiB; a resize never shrinks a disk"), {}
    refusal = quota.would_exceed(storage, r.namespace, claims.key("VMResize", r.uid),
                                 resize_charge(r, new))
    if refusal is not None:
        return Observation(Kind.QUOTA_EXCEEDED, QUOTA_EXCEEDED, refusal), {}
    return Observation(Kind.VALID), {
        "source_host": ist.host, "instance_uid": inst.uid, "old_flavor": ist.flavor,
        "new_flavor": r.spec.flavor or ist.flavor, "old_flavor_spec": old,
        "new_flavor_spec": new}


def _clock(storage: Storage, task: HostTask) -> watchdog.TaskClock:
    """The watchdog's view of ``task``: when the operator saw it and its agents' Host
    heartbeats change, on its own clock (never the agents' stamps: issue 18, finding 4)."""
    ts = task.status
    peer = task.spec.peer.name if task.spec.peer is not None else None
    running = ts is not None and ts.phase is TaskPhase.RUNNING
    return watchdog.TaskClock(
        task=task.name, host=task.spec.host, running=running, heard=storage.task_heard(task),
        host_heard=None if running else storage.host_heard(task.spec.host),
        peer=peer, peer_heard=storage.host_heard(peer) if peer else None)


def _wake(now: datetime, delay: float | None) -> datetime | None:
    """The daemon's wake-up ``delay`` seconds from ``now`` (None: none)."""
    return None if delay is None else now + timedelta(seconds=delay)


def _limit(task: HostTask) -> tuple[int, str]:
    """The bandwidth limit the task's copy runs under, as its agent reports it, and the
    operator's note when it lowered the resize's."""
    p = task.status.progress if task.status else None
    return (p.limit_bytes_per_second if p else 0), task.spec.bandwidth_note


def _observe_task(storage: Storage, settings: Settings, st: VMResizeStatus, now: datetime,
                  *, watchdog_on: bool = True) -> tuple[Observation, datetime | None]:
    """The current task's observation, and when the watchdog should look again."""
    task = storage.task(settings.namespace, st.current_task) if st.current_task else None
    if task is None:
        return Observation(Kind.TASK_MISSING), None
    ts = task.status
    if ts is None or ts.phase in (TaskPhase.PENDING, TaskPhase.RUNNING):
        clock, mono = _clock(storage, task), storage.clock()
        stall = watchdog.stalled(clock, mono, settings.step_stale_seconds)
        if stall is not None and watchdog_on:
            return stall, None
        p = ts.progress if ts else None
        return Observation(Kind.TASK_WAITING, progress=(
            p.bytes_done, p.bytes_total, p.rate_bytes_per_second) if p and p.bytes_total
            else None, limit=_limit(task)), _wake(
                now, watchdog.next_check(clock, mono, settings.step_stale_seconds))
    if ts.phase is TaskPhase.SUCCEEDED:
        p = ts.progress
        return Observation(Kind.TASK_SUCCEEDED, message=ts.message,
                           checksum=ts.result.checksum,
                           downtime_seconds=ts.result.downtime_seconds,
                           power_off=ts.result.power_off,
                           powered_off_at=ts.result.powered_off_at,
                           stopped_at=ts.result.stopped_at,
                           power_off_wait_seconds=ts.result.power_off_wait_seconds,
                           started_at=ts.result.started_at,
                           disks=tuple(ts.result.disks or ()),
                           progress=(p.bytes_total, p.bytes_total, p.rate_bytes_per_second)
                           if p.bytes_total else None, limit=_limit(task)), None
    return Observation(Kind.TASK_FAILED, message=ts.message or "failed",
                       retryable=ts.retryable), None


@dataclass(frozen=True)
class Observed:
    """What one step saw: the ``observation`` the lifecycle decides on, the status
    ``fields`` the look itself fills (the flavors validated, the chosen host's names), and
    when the step watchdog looks again (``watchdog_at``, in a task phase)."""

    observation: Observation
    fields: StatusPatch = field(default_factory=lambda: StatusPatch())
    watchdog_at: datetime | None = None


def observe(storage: Storage, settings: Settings, r: VMResize, st: VMResizeStatus,
            deleting: bool, now: datetime) -> Observed:
    """What the phase looks at."""
    if r.spec.cancel and (st.phase in CANCELLABLE_PHASES or (
            st.phase is P.VERIFY_RESIZE and not r.spec.confirm and not r.spec.revert)):
        # The user's cancel comes before anything the phase would look at; in VerifyResize
        # (reached before it was seen) it reverts, unless the user has decided since.
        return Observed(Observation(Kind.CANCEL))
    if st.phase in lifecycle.TASK_PHASES and not _abandoning(r, st):
        obs, at = _observe_task(storage, settings, st, now)
        return Observed(obs, watchdog_at=at)
    return Observed(*_look(storage, settings, r, st, deleting, now))


def _abandoning(r: VMResize, st: VMResizeStatus) -> bool:
    """Whether an admin gave up the destination and that is not yet observed (once)."""
    return bool(st.phase in ABANDONABLE_PHASES and r.spec.abandon_destination
                and st.abandoned_destination is None)


def _look(storage: Storage, settings: Settings, r: VMResize, st: VMResizeStatus,
          deleting: bool, now: datetime) -> tuple[Observation, StatusPatch]:
    """What a phase other than a task's looks at (or an abandonment)."""
    if st.phase is P.PENDING and not deleting:
        return _validate(storage, r)
    if st.phase is P.SCHEDULING and not deleting:
        return scheduling.schedule(storage, settings, r, st, now)
    if _abandoning(r, st):
        return Observation(Kind.ABANDON, orphan=_orphan(r, st, now)), {}
    if st.phase is P.VERIFY_RESIZE:
        if r.spec.revert:
            return Observation(Kind.REVERT), {}
        if r.spec.confirm:
            return Observation(Kind.CONFIRM), {}
        if st.current_task:   # the health check of spec.autoConfirm runs (own deadline)
            return _observe_task(storage, settings, st, now, watchdog_on=False)[0], {}
        checked = r.spec.auto_confirm is not None and r.spec.auto_confirm.check is not None
        if (not deleting and not checked and st.verify_deadline is not None
                and now >= st.verify_deadline and st.dest_host):
            why = _dest_unvouched(storage, settings, st.dest_host)
            if why:   # the timer would delete the source: look again shortly
                return Observation(Kind.TICK, dest_unvouched=why, deadline=now + timedelta(
                    seconds=HOLD_RECHECK_SECONDS)), {}
    return Observation(Kind.TICK), {}


HOLD_RECHECK_SECONDS = 5.0
"""How often a held auto-confirm looks at the destination again."""


def _dest_unvouched(storage: Storage, settings: Settings, dest: str) -> str:
    """Why the destination's agent cannot vouch for the copy there now (empty: it can): its
    Host gone or not ready, or no heartbeat seen within the stale window (on the operator's
    clock, :mod:`~vmresize.operator.decisions.liveness`)."""
    h = storage.host(dest)
    if h is None:
        return f"the destination host {dest} is gone"
    if h.status is None or not h.status.ready:
        return f"the destination host {dest} is not ready"
    if liveness.stale(storage.host_heard(dest), storage.clock(),
                      settings.heartbeat_stale_seconds):
        return f"no heartbeat seen from the agent of the destination host {dest}"
    return ""
