"""A destination given up in Preparing is cleaned before the next alternate (pure).

A Prepare that fails may have accepted some of the VM's files before it did (their
promises, the ``.xfer`` records the destination's space check counts, and the
shared-storage marker). Moving on to the next alternate without a word to the host it
gave up on left them there for good: that host's space check shrank with every failed
Prepare (issue 18, finding 7c). So when the host's agent answered (the task Failed), the
resize first asks it for a CleanupDest of this move (the step a rollback from Preparing
already uses: it forgets the transfers, removes the marker and any partial file) and
reschedules once that step has ended, whatever its outcome: a cleanup that fails or stalls
must not keep the VM from its next host, it only says so in the message.

A Prepare that *stalled* is not cleaned: its agent is silent, so a CleanupDest would wait
one more step window for nothing, and the agent that wakes later finds the cleanup
superseded like the Prepare itself (what a woken agent should reap is its own business).

The cleanup keeps the phase (Preparing), the destination and its claim until it ends, so
the claim is released exactly once, as before. Its HostTask is named with an attempt of
its own (:data:`ATTEMPT_BASE` + the Prepare's number), so it never meets a rollback's
CleanupDest (attempts from 0) by name.
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.hosttask import TaskAction
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.transitions import prepare_failed as give_up
from vmresize.operator.decisions.transitions import prepared as ready
from vmresize.operator.decisions.vocabulary import CreateTask, Kind, Observation, State, Step

P, A = ResizePhase, TaskAction

ATTEMPT_BASE = 1000
"""The cleanup after the Prepare numbered ``n`` is CleanupDest attempt ``ATTEMPT_BASE + n``
(a rollback's CleanupDest counts from 0 and stays below ``task_retries``)."""


def cleaning(s: State) -> bool:
    """Whether the resize is cleaning the destination a failed Prepare gave up on."""
    return s.phase is P.PREPARING and s.current_action is A.CLEANUP_DEST


def _moves_on(s: State) -> bool:
    """Whether a failed Prepare leads to the next alternate (not to a rollback, which
    cleans the destination itself)."""
    return not s.deleting and bool(s.alternates) and s.attempts < s.max_attempts


def prepare_failed(s: State, o: Observation, now: datetime) -> Step:
    """Prepare failed: clean the host first when its agent answered and an alternate is
    next; otherwise as before (next alternate at once, or roll back)."""
    if cleaning(s):
        return cleaned(s, o, now)
    if o.kind is Kind.TASK_FAILED and _moves_on(s) and s.dest_host:
        return Step(P.PREPARING, (CreateTask(A.CLEANUP_DEST, s.dest_host,
                                             ATTEMPT_BASE + s.attempts),),
                    reason="Rescheduling", message=(
                        f"Preparing {s.dest_host} failed: {o.message}; removing what it "
                        f"accepted there, then trying the next alternate"),
                    updates={"prepare_failure": o.message})
    return give_up(s, o, now)


def prepared(s: State, o: Observation, now: datetime) -> Step:
    """The current task succeeded: the cleanup (reschedule) or the Prepare (migrate)."""
    return cleaned(s, o, now) if cleaning(s) else ready(s, o, now)


def cleaned(s: State, o: Observation, now: datetime) -> Step:
    """The cleanup ended (done, failed or stalled): release the claim and reschedule, as a
    failed Prepare did before; the message says what became of the cleanup."""
    how = ("cleaned" if o.kind is Kind.TASK_SUCCEEDED
           else f"not cleaned ({o.message or o.kind.value}; an admin may remove what it "
                "accepted there)")
    step = give_up(s, Observation(Kind.TASK_FAILED, message=(
        f"{s.prepare_failure or 'failed'}; {s.dest_host} {how}")), now)
    return Step(step.phase, step.actions, reason=step.reason, message=step.message,
                updates={**step.updates, "prepare_failure": None})
