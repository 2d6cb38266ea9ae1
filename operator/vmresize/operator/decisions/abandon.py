"""The rules of abandoning a dead destination (pure): an admin's way out of a resize that
waits on a destination host that never comes back.

Finishing, Reverting and RollingBack wait for the destination's agent (Finish, CleanupDest),
with the source powered off and held. When that host is gone for good, an admin sets
``spec.abandonDestination`` (admission lets only admins do it; the API server's audit log
records who). The engine then observes ``ABANDON`` (once: until the status records the
orphan) and :func:`abandon` answers:

======================================  ==================================================
where the resize is                     decision
======================================  ==================================================
source and destination are one host     refuse (``AbandonRefused``): nothing to fall back on
RestoreSource already runs (source)     fence the copy; the resize ends once it succeeds
the source runs again (a rollback from  fence the copy and end now: nothing is left to do
Migrating, only CleanupDest was left)
anything else (Finish or CleanupDest    fence the copy and create RestoreSource on the
waits on the destination)               source; the resize ends once it succeeds
======================================  ==================================================

Fencing is an effect recorded with the decision and carried out before the RestoreSource
task is created (decide, record, then act): the copy is written into the destination
Host's ``status.orphans``, whose agent destroys it and never starts it. The destination's
own task is superseded (``currentTask`` names RestoreSource), so its agent refuses it if it
ever wakes. The resize ends ``RolledBack`` (``Reverted`` from Reverting) with reason
``DestinationAbandoned``; its destination claim is released.
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.hosttask import TaskAction
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.vocabulary import (
    CreateTask,
    FenceOrphan,
    Observation,
    ReleaseDestClaim,
    State,
    StatusPatch,
    Step,
    UpdateInstance,
)

P = ResizePhase
A = TaskAction
REASON = "DestinationAbandoned"


def _orphan_text(s: State, o: Observation | None = None) -> str:
    if o is not None and o.orphan is not None:
        return (f"the copy left on {o.orphan.host} (domain {o.orphan.domain_name}, "
                f"directory {o.orphan.disk_dir}) is fenced")
    return f"the copy left on {s.dest_host} is fenced"


def abandoned_end(s: State) -> Step:
    """The source runs again after an abandonment: end the resize, release the destination
    claim and give the instance back, Active on its source."""
    end = P.REVERTED if s.phase is P.REVERTING else P.ROLLED_BACK
    msg = (f"Destination {s.dest_host} abandoned by an admin: the instance runs on "
           f"{s.source_host} again, unchanged; {_orphan_text(s)} (Host {s.dest_host} "
           "status.orphans): its agent destroys it when it comes back and never starts it")
    return Step(end, (ReleaseDestClaim(), UpdateInstance(
        "source", InstancePhase.ACTIVE, PowerState.RUNNING, unlock=True, message=msg)),
        reason=REASON, message=msg)


def abandon(s: State, o: Observation, now: datetime) -> Step:
    """``spec.abandonDestination`` was set: fence the destination's copy, then bring the VM
    back on its source (see the module docstring)."""
    if o.orphan is None or not s.dest_host or s.dest_host == s.source_host:
        return Step(s.phase, reason="AbandonRefused", message=(
            f"spec.abandonDestination cannot be honoured: the destination {s.dest_host} is "
            f"the source's own host ({s.source_host}), so there is no other copy to fall "
            "back on; fix the host or its agent"))
    up: StatusPatch = {"abandoned_destination": o.orphan, "rollback_reason": REASON}
    fence = FenceOrphan(s.dest_host)
    source_runs = (s.phase is P.ROLLING_BACK and s.restore_source_first
                   and s.current_action is A.CLEANUP_DEST)
    if source_runs:
        end = abandoned_end(s)
        return Step(end.phase, (fence, *end.actions), reason=end.reason,
                    message=end.message, updates=up)
    text = _orphan_text(s, o)
    if s.current_action is A.RESTORE_SOURCE:
        return Step(s.phase, (fence,), reason=REASON, updates=up, message=(
            f"Destination {s.dest_host} abandoned by an admin; {text}. RestoreSource on "
            f"{s.source_host} goes on; the resize ends when the instance runs there"))
    phase = P.REVERTING if s.phase is P.REVERTING else P.ROLLING_BACK
    if s.phase is P.FINISHING:
        up["rollback_from"] = P.FINISHING.value
    return Step(phase, (fence, CreateTask(A.RESTORE_SOURCE, s.source_host or "", 0)),
                reason=REASON, updates=up, message=(
                    f"Destination {s.dest_host} abandoned by an admin while {s.phase.value} "
                    f"waited on it; {text}. Starting the instance on {s.source_host} again"))
