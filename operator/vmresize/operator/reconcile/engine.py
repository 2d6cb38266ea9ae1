"""Driving one VMResize one step, in four beats: snapshot, decide, record, act.

Synchronous plumbing over :class:`~vmresize.operator.persistence.storage.Storage`; the kopf
handlers run it in a thread, one step of one resize at a time. :func:`step` is the four
beats in a row, each a function with a named result:

1. :func:`snapshot` (a :class:`Snapshot`): the resize as read (``deleting`` is its
   ``metadata.deletionTimestamp``) and what its phase looks at (:mod:`.observe`: in a task
   phase the task, and the step watchdog's clocks), frozen;
2. :func:`decide` (a :class:`~vmresize.operator.decisions.resize_step.Decision`), pure:
   the status that names the decision (phase, ``currentTask``: the deterministic name of
   the one task that may run, and the effects in ``pending``);
3. :func:`record`: that status, written guarded by the resourceVersion read in 1. A 409
   here means nothing happened: the next step decides again;
4. :func:`act`: creates the task named in the written status and carries out the effects
   (:mod:`.effects`). A crash or 409 after 3 makes the next step redo 4. The effects are
   cleared by the write of the next step (no write of its own).

So no HostTask exists, and no claim changes, before the status that asks for it; and an
agent that checks ``currentTask`` before a destructive step never runs a superseded one.
The speed-ups are wrappers around the beats: several steps in one call and the task's
reads during the write (:mod:`.driver`), the resize as last written (:mod:`.storage`).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from vmresize.api import naming
from vmresize.api.host import Host
from vmresize.api.hosttask import TaskAction
from vmresize.api.instance import Instance
from vmresize.api.resize import Effect, VMResize, VMResizeStatus
from vmresize.operator import metrics
from vmresize.operator.decisions import conditions, resize_step
from vmresize.operator.decisions.lifecycle import CreateTask, Observation, StatusPatch
from vmresize.operator.decisions.resize_step import Decision, running_flavor
from vmresize.operator.decisions.tasks import resize_task, task_flavor
from vmresize.operator.errors import NotReadyError
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile import driver, effects, observe
from vmresize.operator.reconcile.driver import Outcome, StepResult
from vmresize.operator.settings import Settings

__all__ = ["Outcome", "Snapshot", "StepResult", "act", "decide", "reconcile", "record",
           "snapshot", "step"]


@dataclass(frozen=True)
class Snapshot:
    """Everything one decision of a resize needs, read once (beat 1)."""

    resize: VMResize
    status: VMResizeStatus
    deleting: bool
    observation: Observation
    observed: StatusPatch              # status fields the look itself fills
    watchdog_at: datetime | None       # when the step watchdog looks again


TaskInputs = tuple[Instance | None, Host | None]


def snapshot(storage: Storage, settings: Settings, r: VMResize, now: datetime) -> Snapshot:
    """Beat 1: the resize ``r`` (as read) and what its phase looks at, frozen."""
    st = r.status or VMResizeStatus()
    deleting = bool(r.metadata.get("deletionTimestamp"))
    seen = observe.observe(storage, settings, r, st, deleting, now)
    return Snapshot(resize=r, status=st, deleting=deleting, observation=seen.observation,
                    observed=seen.fields, watchdog_at=seen.watchdog_at)


def decide(snap: Snapshot, settings: Settings, now: datetime) -> Decision:
    """Beat 2, pure (:mod:`~vmresize.operator.decisions.resize_step`)."""
    return resize_step.decide(snap.resize, snap.status, snap.deleting, snap.observation,
                              snap.observed, snap.watchdog_at, settings, now)


def record(storage: Storage, snap: Snapshot, status: VMResizeStatus) -> VMResize:
    """Beat 3: write ``status``, guarded by the resourceVersion of the snapshot's read."""
    return storage.replace_status(snap.resize.model_copy(update={"status": status}))


def act(storage: Storage, settings: Settings, written: VMResize, decision: Decision,
        now: datetime, ahead: Future[TaskInputs] | None = None) -> VMResize:
    """Beat 4: create the task the ``written`` status names and carry out its effects;
    ``written`` with them cleared in memory (the next write clears them in the API).
    ``ahead``: the task's inputs read during the write, when no effect changes them (the
    task then goes first); else the task follows the effects and reads them itself."""
    if decision.task is not None and ahead is not None:
        _create_task(storage, settings, written, decision.task, ahead.result())
    if decision.status is not None and decision.status.pending:
        written = carry_out(storage, written, now)
    if decision.task is not None and ahead is None:
        _create_task(storage, settings, written, decision.task)
    return written


def step(storage: Storage, settings: Settings, r: VMResize, now: datetime) -> StepResult:
    """One decision of ``r`` (whose ``pending`` is carried out): the four beats in a row."""
    st = r.status or VMResizeStatus()
    if resize_step.finished(st, bool(r.metadata.get("deletionTimestamp"))):
        return StepResult(Outcome(phase=st.phase, done=True))
    snap = snapshot(storage, settings, r, now)
    decision = decide(snap, settings, now)
    new = decision.status
    if new is None:   # nothing to write: it waits for an event or for wake_at
        return StepResult(Outcome(phase=decision.phase, done=decision.done,
                                  wake_at=decision.wake_at))
    ahead = None
    if decision.task is not None and all(_beside_task(e) for e in new.pending):
        ahead = driver.read_ahead(lambda: _task_inputs(storage, r, new.dest_host))
    written = act(storage, settings, record(storage, snap, new), decision, now, ahead)
    if new.phase is not st.phase:
        metrics.transition(st.phase, new.phase, st.phase_timestamps.get(st.phase.value), now,
                           new.downtime_seconds)
    return StepResult(Outcome(phase=new.phase, done=decision.done, changed=True,
                              events=list(decision.events), wake_at=decision.wake_at),
                      written, bool(new.pending))


def reconcile(storage: Storage, settings: Settings, namespace: str, name: str,
              now: datetime) -> Outcome:
    """Steps of the resize ``namespace/name``, folded (:func:`.driver.fold`).

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
        out = _folded(storage, settings, known, now)
        if out.changed:
            return out
        r = storage.resize(namespace, name)
        if r is not None and r.resource_version == known.resource_version:
            return out
    else:
        r = storage.resize(namespace, name)
    if r is None:
        return Outcome(done=True)
    return _folded(storage, settings, r, now)


def _folded(storage: Storage, settings: Settings, r: VMResize, now: datetime) -> Outcome:
    return driver.fold(r, lambda x: step(storage, settings, x, now),
                       lambda x: carry_out(storage, x, now), storage.replace_status)


def carry_out(storage: Storage, r: VMResize, now: datetime) -> VMResize:
    """Carry out ``status.pending`` as written; ``r`` with it cleared in memory only. The
    clearing needs no write of its own: the next decision write carries it (folded), or,
    when no decision follows, the fold writes it. Until then the status still asks for
    the effects, which are idempotent, so a crash or 409 meanwhile just redoes them."""
    st = r.status
    assert st is not None
    effects.apply(storage, r, st, now)
    return r.model_copy(update={"status": st.model_copy(update={
        "pending": [], "conditions": conditions.resize_conditions(
            st.conditions, st.phase, st.reason, st.message, now, st.observed_generation)})})


def _task_inputs(storage: Storage, r: VMResize, dest: str | None) -> TaskInputs:
    """What a task is built from: the Instance and the destination Host, as they are now."""
    return (storage.instance(r.namespace, r.spec.instance_name),
            storage.host(dest) if dest else None)


def _beside_task(e: Effect) -> bool:
    """An effect that changes nothing a task is built from: an Instance update that keeps
    its placement (power state, phase, message)."""
    return e.kind == "UpdateInstance" and e.placement in (None, "keep")


def _create_task(storage: Storage, settings: Settings, r: VMResize, a: CreateTask,
                 inputs: TaskInputs | None = None) -> None:
    """Create the task that the written status of ``r`` names (and no other); ``inputs``:
    the Instance and destination Host if already read (else they are read here)."""
    st = r.status
    assert st is not None
    assert st.current_task == naming.task_name(r.uid, a.action, a.attempt)
    inst, dest = inputs or _task_inputs(storage, r, st.dest_host)
    if inst is None or inst.status is None:
        raise NotReadyError(f"instance {r.spec.instance_name} is gone; cannot build {a.action}")
    new, old = st.new_flavor_spec, st.old_flavor_spec
    if new is None or old is None:   # a resize begun by an operator without snapshots
        running = running_flavor(inst.status)
        target = storage.flavor(st.new_flavor) if st.new_flavor else None
        new = new or (target.spec if target else running)
        old = old or running
    task = resize_task(a.action, a.host, a.attempt, namespace=settings.namespace, resize=r,
                       inst=inst, new=new, old=task_flavor(old), dest=dest,
                       power_off_timeout_seconds=settings.power_off_timeout_seconds,
                       source=storage.host(a.host) if a.action is TaskAction.MIGRATE_DISK
                       else None)
    storage.create_task(task)
