"""Driving one VMResize one step: snapshot, decide (:mod:`lifecycle`), record, then act.

Synchronous plumbing over :class:`~vmresize.operator.persistence.storage.Storage`; the kopf
handlers run it in a thread, one step of one resize at a time. Each step:

1. reads the resize (``deleting`` is its ``metadata.deletionTimestamp``) and first carries
   out what the recorded status still asks for (``status.pending``: claims, the Instance);
2. observes the world for the phase (in a task phase: the task, and the step watchdog's
   clocks, whose earliest expiry the daemon wakes up for) and decides, purely;
3. writes the status that names the decision (phase, ``currentTask``: the deterministic
   name of the one task that may run, and the effects) guarded by the resourceVersion read
   in 1. A 409 here means nothing happened: the next step decides again;
4. only then acts: creates the task named in the written status and carries out the
   effects. A crash or 409 after 3 makes the next step redo 4. The effects are cleared
   by the write of the next step, taken at once in the same call (no write of its own).

So no HostTask exists, and no claim changes, before the status that asks for it; and an
agent that checks ``currentTask`` before a destructive step never runs a superseded one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from vmresize.api import naming
from vmresize.api.flavor import FlavorSpec
from vmresize.api.host import Host
from vmresize.api.instance import Instance
from vmresize.api.resize import (
    Effect,
    ResizePhase,
    VMResize,
    VMResizeStatus,
)
from vmresize.operator import metrics
from vmresize.operator.decisions import conditions, lifecycle
from vmresize.operator.decisions.lifecycle import CreateTask, State
from vmresize.operator.decisions.tasks import resize_task, task_flavor
from vmresize.operator.errors import ApiConflict, ApiUnavailable, NotReady
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile import effects, observe
from vmresize.operator.settings import Settings

P = ResizePhase
log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """The result of one reconcile step: the phase reached, whether the object is finished, whether
    anything was written (else the daemon sleeps until an event wakes it, or until
    ``wake_at`` if that is set), and the events to post."""

    phase: ResizePhase | None = None
    done: bool = False
    changed: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)   # type, reason, text
    wake_at: datetime | None = None   # look again by then at the latest (watchdog, deadlines)


def _state(r: VMResize, st: VMResizeStatus, settings: Settings, deleting: bool) -> State:
    action, attempt = naming.parse_task_name(st.current_task)
    ac = r.spec.auto_confirm
    window = (r.spec.auto_confirm_seconds if r.spec.auto_confirm_seconds is not None
              else settings.auto_confirm_seconds)
    if ac is not None and (ac.after_seconds is not None or ac.check is not None):
        window = ac.after_seconds or 0
    check = ac.check.describe() if ac is not None and ac.check is not None else ""
    return State(phase=st.phase, source_host=st.source_host, dest_host=st.dest_host,
                 attempts=st.attempts, alternates=tuple(st.alternates),
                 current_action=action, current_attempt=attempt,
                 verify_deadline=st.verify_deadline, confirm_window_seconds=window,
                 max_attempts=settings.max_attempts, task_retries=settings.task_retries,
                 deleting=deleting, rollback_from=st.rollback_from, reason=st.reason,
                 health_check=check, health_window_seconds=ac.window() if ac else 0,
                 health_deadline=st.health_deadline, rollback_reason=st.rollback_reason,
                 rollback_message=st.rollback_message, prepare_failure=st.prepare_failure,
                 restore_source_first=st.restore_source_first, powered_off_at=st.powered_off_at,
                 stopped_at=st.stopped_at, abandoned=st.abandoned_destination is not None)


#: Reads for the task a step is about to create go out while its status is written.
_READS = ThreadPoolExecutor(8, thread_name_prefix="task-inputs")
Inputs = tuple[Instance | None, Host | None]


def _task_inputs(storage: Storage, namespace: str, instance: str, dest: str | None) -> Inputs:
    """What a task is built from: the Instance and the destination Host, as they are now."""
    return storage.instance(namespace, instance), storage.host(dest) if dest else None


def _beside_task(e: Effect) -> bool:
    """An effect that changes nothing a task is built from: an Instance update that keeps
    its placement (power state, phase, message)."""
    return e.kind == "UpdateInstance" and e.placement in (None, "keep")


def _create_task(storage: Storage, settings: Settings, r: VMResize, a: CreateTask,
                 inputs: Inputs | None = None) -> None:
    """Create the task that the written status of ``r`` names (and no other); ``inputs``:
    the Instance and destination Host if already read (else they are read here)."""
    st = r.status
    assert st is not None
    assert st.current_task == naming.task_name(r.uid, a.action, a.attempt)
    inst, dest = inputs or _task_inputs(storage, r.namespace, r.spec.instance_name,
                                        st.dest_host)
    if inst is None or inst.status is None:
        raise NotReady(f"instance {r.spec.instance_name} is gone; cannot build {a.action}")
    new, old = st.new_flavor_spec, st.old_flavor_spec
    if new is None or old is None:   # a resize begun by an operator without snapshots
        ist = inst.status
        running = FlavorSpec(vcpus=ist.vcpus or 1, memory_mib=ist.memory_mib or 16,
                             disk_gib=ist.disk_gib or 1)
        target = storage.flavor(st.new_flavor) if st.new_flavor else None
        new = new or (target.spec if target else running)
        old = old or running
    task = resize_task(a.action, a.host, a.attempt, namespace=settings.namespace, resize=r,
                       inst=inst, new=new, old=task_flavor(old), dest=dest,
                       power_off_timeout_seconds=settings.power_off_timeout_seconds)
    storage.create_task(task)


def _carry_out(storage: Storage, r: VMResize, now: datetime) -> VMResize:
    """Carry out ``status.pending``; ``r`` with it cleared in memory only. The clearing
    needs no write of its own: the step's next decision write carries it (folded), or, when
    no decision follows, :func:`_clear` writes it. Until then the status still asks for
    the effects, which are idempotent, so a crash or 409 meanwhile just redoes them."""
    st = r.status
    assert st is not None
    effects.apply(storage, r, st, now)
    return r.model_copy(update={"status": st.model_copy(update={
        "pending": [], "conditions": conditions.resize_conditions(
            st.conditions, st.phase, st.reason, st.message, now, st.observed_generation)})})


def _clear(storage: Storage, r: VMResize) -> None:
    """Write the clearing of ``pending`` that :func:`_carry_out` left to a decision that
    did not come (a 409 here is harmless: the effects are done and idempotent)."""
    storage.replace_status(r)


def _decide(r: VMResize, st: VMResizeStatus, step: lifecycle.Step, updates: dict[str, Any],
            now: datetime) -> tuple[VMResizeStatus, CreateTask | None]:
    new = VMResizeStatus.model_validate({**dict(st), **updates})   # validated, unlike copy
    new.phase = step.phase
    if step.reason is not None:
        new.reason = step.reason
    if step.message is not None:
        new.message = step.message
    task = next((a for a in step.actions if isinstance(a, CreateTask)), None)
    if task is not None:
        new.current_task = naming.task_name(r.uid, task.action, task.attempt)
    elif step.phase not in lifecycle.TASK_PHASES and step.phase is not st.phase:
        new.current_task = None   # no task may run now: agents refuse the last one
    new.pending = [effects.record(a, st) for a in step.actions
                   if not isinstance(a, CreateTask)]
    new.observed_generation = r.metadata.get("generation")
    if step.phase is not st.phase:
        new.phase_timestamps = {**st.phase_timestamps, step.phase.value: now}
    new.conditions = conditions.resize_conditions(st.conditions, new.phase, new.reason,
                                                  new.message, now, new.observed_generation,
                                                  settling=bool(new.pending))
    return new, task


def reconcile(storage: Storage, settings: Settings, namespace: str, name: str,
              now: datetime) -> Outcome:
    """One step of the resize ``namespace/name``.

    After a step that wrote, the next one starts from what that write returned instead of
    reading the resize again (one request less per step): if it was changed meanwhile,
    this step's write is refused (409) and the step is done again from a read; a step that
    writes nothing reads the resize anyway and is done again if it had changed."""
    known = storage.written_resize(namespace, name)
    if known is not None and known.status is not None and known.status.pending:
        # Its effects are acts, which a remembered copy never starts alone: it is left by
        # a step that failed after its write, and the name may be another resize's by now
        # (the finalizer forced off, the same name applied again: its lock and claims
        # were taken for the gone UID; the model test).
        known = None
    if known is not None:
        out = _reconcile(storage, settings, known, now)
        if out.changed:
            return out
        r = storage.resize(namespace, name)
        if r is not None and r.resource_version == known.resource_version:
            return out
    else:
        r = storage.resize(namespace, name)
    if r is None:
        return Outcome(done=True)
    return _reconcile(storage, settings, r, now)


#: Decisions one call takes in a row, each right after the effects of the one before.
FOLDED_STEPS = 4


def _reconcile(storage: Storage, settings: Settings, r: VMResize, now: datetime) -> Outcome:
    """Steps of ``r`` in a row. A step whose write recorded effects (``pending``) carries
    them out, and the next step follows at once from that write: its decision write also
    clears them, so carrying out costs no status write of its own (Pending's lock and
    Scheduling's claim: two writes fewer before Preparing). The order stays decide,
    record, then act: every effect and task is named by a status already written; only
    the clearing of effects already done waits for the next write (a crash or 409 before
    it just makes the next step carry them out once more, all being idempotent)."""
    owed = bool(r.status is not None and r.status.pending)
    if owed:
        r = _carry_out(storage, r, now)
    out: Outcome | None = None
    for n in range(FOLDED_STEPS):
        try:
            more, written, carried = _step(storage, settings, r, now)
            if written is None and owed:
                _clear(storage, r)   # no decision came to carry the clearing
            elif written is not None and carried and n == FOLDED_STEPS - 1:
                _clear(storage, written)   # enough in a row: let the driver step again
        except (ApiConflict, ApiUnavailable, NotReady):
            if out is None:
                raise
            # The steps before are written and carried out (their events still go out);
            # the driver's next step meets this again from a read. Not done, whatever the
            # steps before decided: a 409 says the resize changed (e.g. it is being
            # deleted, which a finished RollbackFailed must still see; the model test).
            log.info("%s/%s: the step after a folded one failed; the next step redoes it",
                     r.namespace, r.name, exc_info=True)
            return replace(out, done=False)
        out = more if out is None else Outcome(
            phase=more.phase, done=more.done, changed=True, events=out.events + more.events,
            wake_at=more.wake_at)
        if written is None or not carried:
            return out
        r, owed = written, True
    assert out is not None
    return out


def _step(storage: Storage, settings: Settings, r: VMResize, now: datetime
          ) -> tuple[Outcome, VMResize | None, bool]:
    """One decision of ``r`` (whose ``pending`` is carried out): its outcome, the resize as
    written (None: nothing was), and whether that write recorded effects, now carried out
    but not yet cleared in the API."""
    deleting = bool(r.metadata.get("deletionTimestamp"))
    st = r.status or VMResizeStatus()
    terminal = lifecycle.is_terminal(st.phase)
    if terminal and not (deleting and st.phase is P.ROLLBACK_FAILED):
        return Outcome(phase=st.phase, done=True), None, False
    wake: list[datetime] = []
    obs, extra = observe.observe(storage, settings, r, st, deleting, now, wake)
    state = _state(r, st, settings, deleting)
    # Between events only time moves a waiting resize: the step watchdog's next look and
    # the lifecycle's own deadlines (auto-confirm); nothing polls it.
    deadline = lifecycle.next_deadline(state, obs)
    wake_at = min([*wake, *([deadline] if deadline else [])], default=None)
    step = lifecycle.step(state, obs, now)
    updates = {**extra, **step.updates}
    if step.phase is st.phase and not step.actions and not updates and step.message is None:
        return Outcome(phase=st.phase, done=terminal, wake_at=wake_at), None, False
    new, task = _decide(r, st, step, updates, now)
    if task is None and not new.pending and new.model_dump(exclude={"conditions"}) == \
            st.model_dump(exclude={"conditions"}):
        return Outcome(phase=st.phase, done=terminal,   # e.g. the same progress again
                       wake_at=wake_at), None, False
    events: list[tuple[str, str, str]] = []
    bad = step.phase in (P.FAILED, P.ROLLBACK_FAILED, P.ROLLING_BACK) or (
        step.reason or "").endswith("Stuck") or step.reason in conditions.HEALTH_FAILED
    if step.phase is not st.phase or (step.actions and new.message != st.message):
        reason = new.reason if step.phase is not st.phase else step.reason or step.phase.value
        events.append(("Warning" if bad else "Normal", reason or step.phase.value,
                       new.message))
    # The task does not wait for effects that change nothing it is built from (the
    # Instance's power state and message): its inputs are read while the decision is
    # written (reads only), and it is created right after the write, before those effects.
    first = task is not None and all(_beside_task(e) for e in new.pending)
    inputs = _READS.submit(_task_inputs, storage, r.namespace, r.spec.instance_name,
                           new.dest_host) if first else None
    r.status = new
    r = storage.replace_status(r)                       # record ...
    if task is not None and inputs is not None:
        _create_task(storage, settings, r, task, inputs.result())   # ... then act
    if new.pending:
        r = _carry_out(storage, r, now)   # the next decision's write clears them
    if task is not None and inputs is None:
        _create_task(storage, settings, r, task)
    if step.phase is not st.phase:
        metrics.transition(st.phase, step.phase, st.phase_timestamps.get(st.phase.value), now,
                           new.downtime_seconds)
    # A rollback that fails while the resize is being deleted ends in RollbackFailed with
    # the claims and the lock still held: one more step releases them (the delete handler
    # must not let the resize go before; found by the model test).
    held = deleting and new.phase is P.ROLLBACK_FAILED and st.phase is not P.ROLLBACK_FAILED
    return Outcome(phase=new.phase, done=lifecycle.is_terminal(new.phase) and not held,
                   changed=True, events=events, wake_at=wake_at), r, bool(new.pending)

