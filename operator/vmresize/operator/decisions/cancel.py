"""The rules of a cancelled resize (pure): ``spec.cancel``, one rule per phase it can meet.

A cancel is a rollback the user asked for: before anything moved (Pending, Scheduling) the
instance is simply let go; from Preparing on the resize rolls back exactly as a failure of
that phase would (:func:`~vmresize.operator.decisions.transitions.begin_rollback`: the
destination cleaned, the source restored and started if MigrateDisk powered it off) and the
last step ends it ``Cancelled`` instead of ``RolledBack``
(:func:`~vmresize.operator.decisions.transitions.back_step_done`). Mid live copy the new
``currentTask`` (RestoreSource) supersedes MigrateDisk, whose agent then refuses the
power-off (invariant 7): the VM never goes off.

Admission accepts ``spec.cancel`` only before VerifyResize. A cancel accepted in Finishing
can still meet VerifyResize (Finish succeeded meanwhile): there it is a revert, and it
ends ``Cancelled`` too.
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.instance import InstancePhase
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.transitions import CANCELLED, begin_rollback, revert
from vmresize.operator.decisions.vocabulary import (
    Observation,
    ReleaseDestClaim,
    State,
    Step,
    UpdateInstance,
)

P = ResizePhase


def cancel_pending(s: State, o: Observation, now: datetime) -> Step:
    """Pending: nothing is locked or claimed yet; the resize just ends."""
    return Step(P.CANCELLED, reason=CANCELLED,
                message="Cancelled before it was scheduled; nothing was touched")


def cancel_scheduling(s: State, o: Observation, now: datetime) -> Step:
    """Scheduling: a destination claim may be held and the lock taken; release both (each
    only if it is this resize's)."""
    return Step(P.CANCELLED, (ReleaseDestClaim(), UpdateInstance(
        "source", InstancePhase.ACTIVE, None, unlock=True)), reason=CANCELLED,
        message="Cancelled while scheduling; the destination claim is released and the "
        "instance runs on its host, unchanged")


def cancel_moving(s: State, o: Observation, now: datetime) -> Step:
    """Preparing, Migrating, Finishing: roll back as that phase's failure would, to an end
    in Cancelled."""
    return begin_rollback(s, CANCELLED, f"Cancelled in {s.phase.value}")


def cancel_verify(s: State, o: Observation, now: datetime) -> Step:
    """VerifyResize reached before the cancel was seen: revert (to an end in Cancelled)."""
    step = revert(s, o, now)
    return Step(step.phase, step.actions, reason=CANCELLED,
                message=f"Cancelled as it reached VerifyResize: reverting. {step.message}",
                updates={"rollback_reason": CANCELLED, "rollback_from": s.phase.value})
