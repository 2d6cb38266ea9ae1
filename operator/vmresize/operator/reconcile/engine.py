"""Driving one VMResize one step: observe, decide (:mod:`lifecycle`), act, persist.

Synchronous plumbing over :class:`~vmresize.operator.persistence.storage.Storage`; the kopf handlers
run it in a thread. Every action is idempotent and the status is written last, guarded by
the resourceVersion read at the start, so a crash (or a second operator) at any point just
makes the next call redo the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vmresize.api.flavor import FlavorSpec
from vmresize.api.hosttask import TaskAction, TaskFlavor, TaskPhase
from vmresize.api.instance import Instance, InstancePhase, InstanceStatus
from vmresize.api.resize import ResizePhase, VMResize, VMResizeStatus
from vmresize.operator import metrics
from vmresize.operator.decisions import conditions, lifecycle
from vmresize.operator.decisions.lifecycle import (
    CommitClaims,
    CreateTask,
    Kind,
    Observation,
    ReleaseDestClaim,
    State,
    UpdateInstance,
)
from vmresize.operator.decisions.tasks import parse_task_name, resize_task, task_flavor
from vmresize.operator.errors import NotReady
from vmresize.operator.persistence import claims
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile import scheduling
from vmresize.operator.settings import Settings

P = ResizePhase


@dataclass
class Outcome:
    """The result of one reconcile step: the phase reached, whether the object is finished, whether
    anything was written (else the daemon sleeps), and the events to post."""

    phase: ResizePhase | None = None
    done: bool = False
    changed: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)   # type, reason, text


def _state(r: VMResize, st: VMResizeStatus, settings: Settings, deleting: bool) -> State:
    action, attempt = parse_task_name(st.current_task)
    window = (r.spec.auto_confirm_seconds if r.spec.auto_confirm_seconds is not None
              else settings.auto_confirm_seconds)
    return State(phase=st.phase, source_host=st.source_host, dest_host=st.dest_host,
                 attempts=st.attempts, alternates=tuple(st.alternates),
                 current_action=action, current_attempt=attempt,
                 verify_deadline=st.verify_deadline, confirm_window_seconds=window,
                 max_attempts=settings.max_attempts, task_retries=settings.task_retries,
                 deleting=deleting, rollback_from=st.rollback_from)


def _validate(storage: Storage, r: VMResize) -> tuple[Observation, dict[str, Any]]:
    """Pending: the request is sound and the instance lock is ours."""
    inst = storage.instance(r.namespace, r.spec.instance_name)
    if inst is None:
        return Observation(Kind.INVALID, "InstanceNotFound",
                           f"Instance {r.spec.instance_name} does not exist"), {}
    ist = inst.status or InstanceStatus()
    if ist.active_resize and ist.active_resize != r.name:
        return Observation(Kind.BUSY, "InstanceBusy", f"Instance {inst.name} is already being "
                           f"resized by VMResize {ist.active_resize}; nothing was changed"), {}
    if ist.phase in (InstancePhase.PENDING, InstancePhase.BUILDING):
        return Observation(Kind.TICK), {}   # applied together with its instance: wait
    flavor_name = r.spec.flavor or ist.flavor or inst.spec.flavor
    flavor = storage.flavor(flavor_name)
    if flavor is None:
        return Observation(Kind.INVALID, "FlavorNotFound",
                           f"Flavor {flavor_name} does not exist"), {}
    if ist.disk_gib is not None and flavor.spec.disk_gib < ist.disk_gib:
        return Observation(Kind.INVALID, "DiskShrink", f"Flavor {flavor_name} has a "
                           f"{flavor.spec.disk_gib} GiB disk but the instance has "
                           f"{ist.disk_gib} GiB; a resize never shrinks a disk"), {}
    locked = claims.lock_instance(storage, r.namespace, inst.name, r.name)
    if locked == "busy":
        return Observation(Kind.BUSY, "InstanceBusy", f"Instance {inst.name} is already "
                           "being resized; nothing was changed"), {}
    if locked in ("missing", "notready"):
        return Observation(Kind.INVALID, "InstanceNotReady",
                           f"Instance {inst.name} is not Active on a host"), {}
    return Observation(Kind.VALID), {"source_host": ist.host, "old_flavor": ist.flavor,
                                     "new_flavor": flavor_name}


def _observe_task(storage: Storage, settings: Settings, st: VMResizeStatus) -> Observation:
    task = storage.task(settings.namespace, st.current_task) if st.current_task else None
    if task is None:
        return Observation(Kind.TASK_MISSING)
    ts = task.status
    if ts is None or ts.phase in (TaskPhase.PENDING, TaskPhase.RUNNING):
        p = ts.progress if ts else None
        return Observation(Kind.TASK_WAITING, progress=(
            p.bytes_done, p.bytes_total, p.rate_bytes_per_second) if p and p.bytes_total else None)
    if ts.phase is TaskPhase.SUCCEEDED:
        p = ts.progress
        return Observation(Kind.TASK_SUCCEEDED, checksum=ts.result.checksum,
                           downtime_seconds=ts.result.downtime_seconds,
                           progress=(p.bytes_total, p.bytes_total, p.rate_bytes_per_second)
                           if p.bytes_total else None)
    return Observation(Kind.TASK_FAILED, message=ts.message or "failed", retryable=ts.retryable)


def _observe(storage: Storage, settings: Settings, r: VMResize, st: VMResizeStatus,
             deleting: bool, now: datetime) -> tuple[Observation, dict[str, Any]]:
    if st.phase is P.PENDING and not deleting:
        return _validate(storage, r)
    if st.phase is P.SCHEDULING and not deleting:
        return scheduling.schedule(storage, settings, r, st, now)
    if st.phase in lifecycle.TASK_PHASES:
        return _observe_task(storage, settings, st), {}
    if st.phase is P.VERIFY_RESIZE:
        if r.spec.revert:
            return Observation(Kind.REVERT), {}
        if r.spec.confirm:
            return Observation(Kind.CONFIRM), {}
    return Observation(Kind.TICK), {}


def _act(storage: Storage, settings: Settings, r: VMResize, st: VMResizeStatus,
         actions: tuple[lifecycle.Action, ...], now: datetime) -> str | None:
    """Carry out the actions; returns the name of the task created, if any."""
    ns, inst_name = r.namespace, r.spec.instance_name
    resize_key = claims.key("VMResize", ns, r.name)
    inst_key = claims.key("Instance", ns, inst_name)
    created = None
    for a in actions:
        if isinstance(a, CreateTask):
            created = _create_task(storage, settings, r, st, a)
        elif isinstance(a, ReleaseDestClaim):
            # No dest in status yet: a claim taken just before a crash may still be there.
            holder = st.dest_host or claims.find_claim(storage.hosts(), resize_key)
            claims.release(storage, holder, resize_key)
        elif isinstance(a, CommitClaims):
            assert st.dest_host is not None
            same = st.dest_host == st.source_host
            claims.transfer(storage, st.dest_host, resize_key, inst_key,
                            drop=inst_key if same else None)
            if not same:
                claims.release(storage, st.source_host, inst_key)
        elif isinstance(a, UpdateInstance):
            flavor = storage.flavor(st.new_flavor) if st.new_flavor else None
            claims.update_instance(storage, ns, inst_name, r.name, _instance_change(
                a, st, flavor.spec if flavor else None, now))
    return created


def _create_task(storage: Storage, settings: Settings, r: VMResize, st: VMResizeStatus,
                 a: CreateTask) -> str:
    inst = storage.instance(r.namespace, r.spec.instance_name)
    if inst is None or inst.status is None:
        raise NotReady(f"instance {r.spec.instance_name} is gone; cannot build {a.action}")
    new = _flavor(storage, st.new_flavor, inst)
    old = _old_flavor(storage, st, inst)
    dest = storage.host(st.dest_host) if a.action is TaskAction.MIGRATE_DISK and st.dest_host \
        else None
    # resize_task reads the status from the resize: give it the one this step leaves.
    task = resize_task(a.action, a.host, a.attempt, namespace=settings.namespace,
                       resize=r.model_copy(update={"status": st}),
                       inst=inst, new=new, old=old, dest=dest,
                       power_off_timeout_seconds=settings.power_off_timeout_seconds)
    storage.create_task(task)
    return task.name


def _flavor(storage: Storage, name: str | None, inst: Instance) -> FlavorSpec:
    f = storage.flavor(name) if name else None
    if f is not None:
        return f.spec
    ist = inst.status or InstanceStatus()
    return FlavorSpec(vcpus=ist.vcpus or 1, memory_mib=ist.memory_mib or 16,
                      disk_gib=ist.disk_gib or 1)


def _old_flavor(storage: Storage, st: VMResizeStatus, inst: Instance) -> TaskFlavor | None:
    ist = inst.status
    if ist and ist.vcpus and ist.memory_mib and ist.disk_gib:
        return TaskFlavor(vcpus=ist.vcpus, memory_mib=ist.memory_mib, disk_gib=ist.disk_gib)
    f = storage.flavor(st.old_flavor) if st.old_flavor else None
    return task_flavor(f.spec) if f else None


def _instance_change(a: UpdateInstance, st: VMResizeStatus, f: FlavorSpec | None,
                     now: datetime) -> Callable[[InstanceStatus], InstanceStatus]:
    def change(s: InstanceStatus) -> InstanceStatus:
        upd: dict[str, Any] = {"phase": a.phase, "message": a.message,
                               "power_state": a.power or s.power_state}
        if a.unlock:
            upd["active_resize"] = None
        if a.placement == "dest":
            upd.update(host=st.dest_host, flavor=st.new_flavor, domain_name=st.dest_domain_name,
                       disk_path=st.dest_disk_path,
                       message=a.message or f"Resized by {s.active_resize}")
            if f is not None:
                upd.update(vcpus=f.vcpus, memory_mib=f.memory_mib,
                           disk_gib=max(f.disk_gib, s.disk_gib or 0))
        new = s.model_copy(update=upd)
        new.conditions = conditions.instance_conditions(s.conditions, new.phase, new.message,
                                                        now)
        return new

    return change


def reconcile(storage: Storage, settings: Settings, namespace: str, name: str,
              now: datetime, deleting: bool = False) -> Outcome:
    """One step of the resize ``namespace/name``."""
    r = storage.resize(namespace, name)
    if r is None:
        return Outcome(done=True)
    st = r.status or VMResizeStatus()
    terminal = lifecycle.is_terminal(st.phase)
    if terminal and not (deleting and st.phase is P.ROLLBACK_FAILED):
        return Outcome(phase=st.phase, done=True)
    obs, extra = _observe(storage, settings, r, st, deleting, now)
    step = lifecycle.step(_state(r, st, settings, deleting), obs, now)
    updates = {**extra, **step.updates}
    if step.phase is st.phase and not step.actions and not updates and step.message is None:
        return Outcome(phase=st.phase, done=terminal)
    # Actions see the status as the step leaves it (a Finish task needs the checksum that
    # the MigrateDisk result just brought); a released claim is found by its key if the
    # step clears dest_host.
    st_for_actions = VMResizeStatus.model_validate({**dict(st), **updates})
    created = _act(storage, settings, r, st_for_actions, step.actions, now)
    new = VMResizeStatus.model_validate({**dict(st), **updates})   # validated, unlike copy
    new.phase = step.phase
    if step.reason is not None:
        new.reason = step.reason
    if step.message is not None:
        new.message = step.message
    if created is not None:
        new.current_task = created
    new.observed_generation = r.metadata.get("generation")
    events: list[tuple[str, str, str]] = []
    bad = step.phase in (P.FAILED, P.ROLLBACK_FAILED, P.ROLLING_BACK) or (
        step.reason or "").endswith("Stuck")
    if step.phase is not st.phase:
        new.phase_timestamps = {**st.phase_timestamps, step.phase.value: now}
    if step.phase is not st.phase or (step.actions and new.message != st.message):
        reason = new.reason if step.phase is not st.phase else step.reason or step.phase.value
        events.append(("Warning" if bad else "Normal", reason or step.phase.value,
                       new.message))
    new.conditions = conditions.resize_conditions(st.conditions, new.phase, new.reason,
                                                  new.message, now, new.observed_generation)
    if not created and new.model_dump() == st.model_dump():
        return Outcome(phase=st.phase, done=terminal)   # e.g. the same progress again
    r.status = new
    storage.replace_status(r)
    if step.phase is not st.phase:
        metrics.transition(st.phase, step.phase, st.phase_timestamps.get(st.phase.value), now,
                           new.downtime_seconds)
    return Outcome(phase=new.phase, done=lifecycle.is_terminal(new.phase), changed=True,
                   events=events)

