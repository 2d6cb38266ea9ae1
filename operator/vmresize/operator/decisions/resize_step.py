"""The decide beat of one VMResize step: from a snapshot's parts to the status to write.

Pure: no Kubernetes, no clock (``now`` is passed in). :mod:`.lifecycle` says what the
resize does next (phase, actions, status fields); this module turns that into what the
engine records and then acts on: the whole new status (the decision with its effects in
``pending`` and the one task that may run in ``currentTask``), the task to create, the
events to post, and when to look again. It also says what a task is built from when a
resize begun by an older operator has no flavor snapshots (:func:`running_flavor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vmresize.api import naming
from vmresize.api.flavor import FlavorSpec
from vmresize.api.instance import InstanceStatus
from vmresize.api.resize import Effect, ResizePhase, VMResize, VMResizeStatus
from vmresize.operator.decisions import conditions, lifecycle
from vmresize.operator.decisions.vocabulary import (
    Action,
    ClaimDest,
    CommitClaims,
    CreateTask,
    FenceOrphan,
    LockInstance,
    Observation,
    ReleaseDestClaim,
    State,
    StatusPatch,
    UpdateInstance,
)
from vmresize.operator.settings import Settings

P = ResizePhase
Event = tuple[str, str, str]   # type, reason, text


@dataclass(frozen=True)
class Decision:
    """What one step decided, ready to record and act on.

    ``status`` is the status to write (None: nothing to write, the step only waits);
    ``task`` the task that written status names (created after the write); ``done``
    whether the resize is finished once this is recorded; ``wake_at`` when to look again
    at the latest though no event comes (watchdog, deadlines)."""

    phase: ResizePhase
    done: bool
    status: VMResizeStatus | None = None
    task: CreateTask | None = None
    events: tuple[Event, ...] = ()
    wake_at: datetime | None = None


def finished(st: VMResizeStatus, deleting: bool) -> bool:
    """Whether a resize in ``st`` has nothing left to decide, so that no snapshot is taken:
    a final phase (but RollbackFailed while it is being deleted still releases)."""
    return lifecycle.is_terminal(st.phase) and not (deleting and st.phase is P.ROLLBACK_FAILED)


def running_flavor(ist: InstanceStatus) -> FlavorSpec:
    """The flavor an Instance runs with as its status tells it (the smallest VM where it
    tells nothing): what a resize falls back on without a Flavor object or a snapshot."""
    return FlavorSpec(vcpus=ist.vcpus or 1, memory_mib=ist.memory_mib or 16,
                      disk_gib=ist.disk_gib or 1)


def state_of(r: VMResize, st: VMResizeStatus, settings: Settings, deleting: bool) -> State:
    """The lifecycle's view of the resize ``r`` whose status is ``st``."""
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


def effect_of(a: Action, st: VMResizeStatus) -> Effect:
    """The status form of a (non-task) action, decided while the resize was in ``st``."""
    if isinstance(a, LockInstance):
        return Effect(kind="LockInstance")
    if isinstance(a, ClaimDest):
        return Effect(kind="ClaimDest", host=a.host)
    if isinstance(a, ReleaseDestClaim):
        # The host as it was when decided: the step may clear dest_host.
        return Effect(kind="ReleaseDestClaim", host=st.dest_host)
    if isinstance(a, CommitClaims):
        return Effect(kind="CommitClaims")
    if isinstance(a, FenceOrphan):
        return Effect(kind="FenceOrphan", host=a.host)
    assert isinstance(a, UpdateInstance)
    return Effect(kind="UpdateInstance", placement=a.placement, instance_phase=a.phase,
                  power_state=a.power, unlock=a.unlock, message=a.message)


def _new_status(r: VMResize, st: VMResizeStatus, step: lifecycle.Step,
                patch: StatusPatch, now: datetime
                ) -> tuple[VMResizeStatus, CreateTask | None]:
    new = st.model_copy(update=dict(patch))   # each value of its field's type (StatusPatch)
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
    new.pending = [effect_of(a, st) for a in step.actions if not isinstance(a, CreateTask)]
    new.observed_generation = r.metadata.get("generation")
    if step.phase is not st.phase:
        new.phase_timestamps = {**st.phase_timestamps, step.phase.value: now}
    new.conditions = conditions.resize_conditions(st.conditions, new.phase, new.reason,
                                                  new.message, now, new.observed_generation,
                                                  settling=bool(new.pending))
    return new, task


def _events(st: VMResizeStatus, new: VMResizeStatus, step: lifecycle.Step) -> tuple[Event, ...]:
    """The event a step posts: on a change of phase, or an act with a new message."""
    bad = step.phase in (P.FAILED, P.ROLLBACK_FAILED, P.ROLLING_BACK) or (
        step.reason or "").endswith("Stuck") or step.reason in conditions.HEALTH_FAILED
    if step.phase is not st.phase or (step.actions and new.message != st.message):
        reason = new.reason if step.phase is not st.phase else step.reason or step.phase.value
        return (("Warning" if bad else "Normal", reason or step.phase.value, new.message),)
    return ()


def decide(r: VMResize, st: VMResizeStatus, deleting: bool, obs: Observation,
           observed: StatusPatch, watchdog_at: datetime | None, settings: Settings,
           now: datetime) -> Decision:
    """The decision of ``r`` (status ``st``) on the observation ``obs``; ``observed``: the
    status fields the observation itself fills (the flavors validated, the host chosen);
    ``watchdog_at``: when the step watchdog looks again."""
    terminal = lifecycle.is_terminal(st.phase)
    state = state_of(r, st, settings, deleting)
    # Between events only time moves a waiting resize: the step watchdog's next look and
    # the lifecycle's own deadlines (auto-confirm); nothing polls it.
    deadline = lifecycle.next_deadline(state, obs)
    wake_at = min([t for t in (watchdog_at, deadline) if t is not None], default=None)
    step = lifecycle.step(state, obs, now)
    patch: StatusPatch = {**observed, **step.updates}
    waiting = Decision(phase=st.phase, done=terminal, wake_at=wake_at)
    if step.phase is st.phase and not step.actions and not patch and step.message is None:
        return waiting
    new, task = _new_status(r, st, step, patch, now)
    if task is None and not new.pending and new.model_dump(exclude={"conditions"}) == \
            st.model_dump(exclude={"conditions"}):
        return waiting   # e.g. the same progress again
    # A rollback that fails while the resize is being deleted ends in RollbackFailed with
    # the claims and the lock still held: one more step releases them (the delete handler
    # must not let the resize go before; found by the model test).
    held = deleting and new.phase is P.ROLLBACK_FAILED and st.phase is not P.ROLLBACK_FAILED
    return Decision(phase=new.phase, done=lifecycle.is_terminal(new.phase) and not held,
                    status=new, task=task, events=_events(st, new, step), wake_at=wake_at)
