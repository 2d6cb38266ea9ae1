"""The VMResize lifecycle as a transition table: ``(state, observation, now) -> step``.

Pure: no Kubernetes, no clock. The engine (:mod:`vmresize.operator.reconcile.engine`) observes the
world for the current phase (validate and lock in Pending, schedule and claim in
Scheduling, the current HostTask in the task phases, the user's confirm/revert in
VerifyResize, a plain ``TICK`` otherwise), calls :func:`step`, carries out the actions and
persists the status. Every action is idempotent, so running a step twice after a crash is
harmless.

Task phases and who acts (see DESIGN.md; a step whose agent falls silent is stalled, see
:mod:`vmresize.operator.decisions.watchdog`: Preparing, Migrating and Finishing treat it as
a failure, the later phases report it and wait, since retrying on the same silent agent
cannot help and giving up would strand the copies):

=============  ==========================================  =============================
phase          HostTask (host)                             on failure
=============  ==========================================  =============================
Preparing      Prepare (dest)                              CleanupDest there (an agent
                                                           that answered), release claim,
                                                           next alternate
Migrating      MigrateDisk (source)                        RollingBack
Finishing      Finish (dest)                               RollingBack
Confirming     Confirm (source)                            retry, then wait for an admin
Reverting      CleanupDest (dest), then RestoreSource (src)  retry, then wait for an admin
RollingBack    CleanupDest (dest), then RestoreSource (src)  RollbackFailed
               (from Migrating: RestoreSource first)
=============  ==========================================  =============================

VerifyResize waits for the user; with a health check in ``spec.autoConfirm`` it also runs
HealthCheck (dest): passed confirms, failed reverts (:mod:`.health`). A timer's
auto-confirm first asks the destination (a HealthCheck without a probe) whether the
domain still runs there, and holds if not (:mod:`.confirm_check`).

Finishing, Reverting and RollingBack also take an admin's ``spec.abandonDestination``: the
copy on a dead destination is fenced and the VM started on its source (:mod:`.abandon`).
Every phase before VerifyResize takes the user's ``spec.cancel``: a rollback that ends
``Cancelled`` (:mod:`.cancel`).
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.resize import TERMINAL_PHASES, ResizePhase
from vmresize.operator.decisions.abandon import abandon
from vmresize.operator.decisions.cancel import (
    cancel_moving,
    cancel_pending,
    cancel_scheduling,
    cancel_verify,
)
from vmresize.operator.decisions.confirm_check import (
    check_failed,
    check_missing,
    check_passed,
    check_waiting,
    verify_tick,
)
from vmresize.operator.decisions.prepare_cleanup import prepare_failed, prepared
from vmresize.operator.decisions.quota import scheduling_refused as quota_refused
from vmresize.operator.decisions.rollback_failed import rollback_failed, rollback_failed_deleted
from vmresize.operator.decisions.transitions import (
    back_step_done,
    chosen,
    confirm,
    confirmed,
    finished,
    migrated,
    no_valid_host,
    pending_refused,
    pending_tick,
    pending_valid,
    progress_display,
    recreate,
    retry_or_wait,
    revert,
    scheduled,
    scheduling_refused,
    scheduling_tick,
    stalled_wait,
    stay,
    step_failed,
    waiting,
)
from vmresize.operator.decisions.vocabulary import (
    Action,
    ClaimDest,
    CommitClaims,
    CreateTask,
    FenceOrphan,
    Kind,
    LockInstance,
    Observation,
    ReleaseDestClaim,
    Rule,
    State,
    StatusPatch,
    Step,
    UpdateInstance,
)

P = ResizePhase

K = Kind
TABLE: dict[tuple[ResizePhase, Kind], Rule] = {
    (P.PENDING, K.VALID): pending_valid,
    (P.PENDING, K.INVALID): pending_refused,
    (P.PENDING, K.BUSY): pending_refused,
    (P.PENDING, K.TICK): pending_tick,
    (P.SCHEDULING, K.CHOSEN): chosen,
    (P.SCHEDULING, K.SCHEDULED): scheduled,
    (P.SCHEDULING, K.INVALID): scheduling_refused,
    (P.SCHEDULING, K.BUSY): scheduling_refused,
    (P.SCHEDULING, K.NO_VALID_HOST): no_valid_host,
    (P.SCHEDULING, K.TICK): scheduling_tick,
    (P.PREPARING, K.TASK_WAITING): waiting,
    (P.PREPARING, K.TASK_MISSING): recreate,
    (P.PREPARING, K.TASK_SUCCEEDED): prepared,
    (P.PREPARING, K.TASK_FAILED): prepare_failed,
    (P.PREPARING, K.TASK_STALLED): prepare_failed,
    (P.MIGRATING, K.TASK_WAITING): waiting,
    (P.MIGRATING, K.TASK_MISSING): recreate,
    (P.MIGRATING, K.TASK_SUCCEEDED): migrated,
    (P.MIGRATING, K.TASK_FAILED): step_failed,
    (P.MIGRATING, K.TASK_STALLED): step_failed,
    (P.FINISHING, K.TASK_WAITING): waiting,
    (P.FINISHING, K.TASK_MISSING): recreate,
    (P.FINISHING, K.TASK_SUCCEEDED): finished,
    (P.FINISHING, K.TASK_FAILED): step_failed,
    (P.FINISHING, K.TASK_STALLED): step_failed,
    (P.VERIFY_RESIZE, K.CONFIRM): confirm,
    (P.VERIFY_RESIZE, K.REVERT): revert,
    (P.VERIFY_RESIZE, K.TICK): verify_tick,
    (P.VERIFY_RESIZE, K.TASK_WAITING): check_waiting,
    (P.VERIFY_RESIZE, K.TASK_MISSING): check_missing,
    (P.VERIFY_RESIZE, K.TASK_SUCCEEDED): check_passed,
    (P.VERIFY_RESIZE, K.TASK_FAILED): check_failed,
    (P.CONFIRMING, K.TASK_WAITING): waiting,
    (P.CONFIRMING, K.TASK_MISSING): recreate,
    (P.CONFIRMING, K.TASK_SUCCEEDED): confirmed,
    (P.CONFIRMING, K.TASK_FAILED): retry_or_wait,
    (P.CONFIRMING, K.TASK_STALLED): stalled_wait,
    (P.REVERTING, K.TASK_WAITING): waiting,
    (P.REVERTING, K.TASK_MISSING): recreate,
    (P.REVERTING, K.TASK_SUCCEEDED): back_step_done,
    (P.REVERTING, K.TASK_FAILED): retry_or_wait,
    (P.REVERTING, K.TASK_STALLED): stalled_wait,
    (P.ROLLING_BACK, K.TASK_WAITING): waiting,
    (P.ROLLING_BACK, K.TASK_MISSING): recreate,
    (P.ROLLING_BACK, K.TASK_SUCCEEDED): back_step_done,
    (P.ROLLING_BACK, K.TASK_FAILED): rollback_failed,
    (P.ROLLING_BACK, K.TASK_STALLED): stalled_wait,
    (P.ROLLBACK_FAILED, K.TICK): rollback_failed_deleted,
    # An admin gives up a destination that never comes back (:mod:`.abandon`).
    (P.FINISHING, K.ABANDON): abandon,
    (P.REVERTING, K.ABANDON): abandon,
    (P.ROLLING_BACK, K.ABANDON): abandon,
    # The user cancels before VerifyResize (:mod:`.cancel`); met there, it reverts.
    (P.PENDING, K.CANCEL): cancel_pending,
    (P.SCHEDULING, K.CANCEL): cancel_scheduling,
    (P.PREPARING, K.CANCEL): cancel_moving,
    (P.MIGRATING, K.CANCEL): cancel_moving,
    (P.FINISHING, K.CANCEL): cancel_moving,
    (P.VERIFY_RESIZE, K.CANCEL): cancel_verify,
    # The namespace's VMQuota has no room (:mod:`.quota`): checked in Pending, charged with
    # the destination claim.
    (P.PENDING, K.QUOTA_EXCEEDED): pending_refused,
    (P.SCHEDULING, K.QUOTA_EXCEEDED): quota_refused,
}
"""Every (phase, observation) the resize reacts to. Anything else leaves it unchanged."""

#: Phases whose progress is a HostTask.
TASK_PHASES = frozenset({P.PREPARING, P.MIGRATING, P.FINISHING, P.CONFIRMING, P.REVERTING,
                         P.ROLLING_BACK})


def step(state: State, obs: Observation, now: datetime) -> Step:
    """The next phase and the actions to get there."""
    rule = TABLE.get((state.phase, obs.kind), stay)
    return rule(state, obs, now)


def next_deadline(state: State, obs: Observation) -> datetime | None:
    """When a resize that is waiting must be looked at again though nothing changed.

    Between its events (its HostTasks, its spec, its Instance) a waiting resize costs
    nothing; time alone moves it only at these moments: the auto-confirm deadline in
    VerifyResize, and whatever deadline the observation carries. None: only events."""
    times = [obs.deadline] if obs.deadline is not None else []
    # A held auto-confirm's window has passed: only its own recheck (obs.deadline) counts.
    if state.phase is P.VERIFY_RESIZE and state.verify_deadline is not None \
            and not obs.dest_unvouched:
        times.append(state.verify_deadline)
    return min(times, default=None)


def is_terminal(phase: ResizePhase) -> bool:
    """Whether a resize in ``phase`` is finished: no rule moves it on and its daemon stops."""
    return phase in TERMINAL_PHASES


__all__ = ["TABLE", "TASK_PHASES", "Action", "ClaimDest", "CommitClaims", "CreateTask",
           "FenceOrphan", "Kind",
           "LockInstance", "Observation", "ReleaseDestClaim", "State", "StatusPatch", "Step",
           "UpdateInstance",
           "is_terminal", "next_deadline", "progress_display", "step"]
