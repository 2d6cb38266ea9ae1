"""The rules of a rollback that failed (pure): RollbackFailed, and deleting it.

A failed rollback step is retried while retries are left (:func:`.transitions.retry_or_wait`);
after that the resize stops in RollbackFailed with both copies and the claims kept, and its
message names the only way on, since nothing retries a final phase. Deleting the resize is
then the admin saying the mess is cleaned up. Split from :mod:`.transitions`, whose table
entries these are too (:mod:`.lifecycle`).
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.hosttask import TaskAction
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.transitions import retry_or_wait
from vmresize.operator.decisions.vocabulary import (
    Observation,
    ReleaseDestClaim,
    State,
    Step,
    UpdateInstance,
)

P = ResizePhase
A = TaskAction


def rollback_failed(s: State, o: Observation, now: datetime) -> Step:
    """A rollback step failed: retry it while retries are left, then RollbackFailed with both copies
    and claims kept for an admin."""
    if o.retryable and s.current_attempt + 1 < s.task_retries:
        return retry_or_wait(s, o, now)
    # Nothing retries a RollbackFailed resize (it is final): the message names the only way
    # on, so that an admin never waits for a retry that will not come.
    if s.restore_source_first and s.current_action is A.CLEANUP_DEST:   # the VM runs again
        msg = (f"Rollback failed at {s.current_action} ({o.message}). The instance runs on "
               f"{s.source_host} again; the partial copy on {s.dest_host} is kept and its "
               f"claim held. Nothing will retry it. An admin must fix {s.dest_host} and remove "
               "that copy, then delete this VMResize: that releases the claim and the "
               "instance lock (see the runbook in the docs).")
        return Step(P.ROLLBACK_FAILED, (UpdateInstance("source", InstancePhase.ACTIVE,
                                                       PowerState.RUNNING, unlock=False,
                                                       message=msg),),
                    reason="RollbackFailed", message=msg)
    broken = s.source_host if s.current_action is A.RESTORE_SOURCE else s.dest_host
    msg = (f"Rollback failed at {s.current_action} ({o.message}). Both copies are kept and "
           f"both claims held: source on {s.source_host}, new copy on {s.dest_host}. Nothing "
           f"will retry it. An admin must fix {broken}, remove the new copy on {s.dest_host} "
           f"and start the instance on {s.source_host} by hand, then delete this VMResize: that "
           "releases the claims and the instance lock (see the runbook in the docs).")
    return Step(P.ROLLBACK_FAILED, (UpdateInstance("source", InstancePhase.ERROR,
                                                   PowerState.UNKNOWN, unlock=False,
                                                   message=msg),),
                reason="RollbackFailed", message=msg)


def rollback_failed_deleted(s: State, o: Observation, now: datetime) -> Step:
    """Deleting a RollbackFailed resize is the admin saying "I have cleaned up"."""
    if not s.deleting:
        return Step(s.phase)
    if s.restore_source_first and s.current_action is A.CLEANUP_DEST:   # it ran again
        return Step(s.phase, (ReleaseDestClaim(), UpdateInstance(
            "source", InstancePhase.ACTIVE, PowerState.RUNNING, unlock=True,
            message="Released by deleting the failed VMResize")))
    return Step(s.phase, (ReleaseDestClaim(), UpdateInstance(
        "source", InstancePhase.ERROR, PowerState.UNKNOWN, unlock=True,
        message="Released by deleting the failed VMResize; check the instance")))
