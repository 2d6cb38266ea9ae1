"""The rules of health-gated auto-confirm (pure): VerifyResize with a HealthCheck task.

When ``spec.autoConfirm`` names a check, :func:`~.transitions.verify_tick` creates the
HealthCheck task on the destination once ``afterSeconds`` have passed; from then on the
engine observes that task in VerifyResize and these rules answer:

===============  ==============================================================
task             decision
===============  ==============================================================
Succeeded        confirm (reason ``HealthCheckPassed``)
Failed           revert (``HealthCheckFailed``), unless the failure is retryable
                 (the agent could not probe, e.g. the API was unreachable) and
                 the window is still open: then the task is created again
Waiting          wait; revert (``HealthCheckTimedOut``) once the window and a
                 grace for the agent's own verdict have passed
Missing          create it again
===============  ==============================================================

A deleted resize reverts whatever the check says (never confirms). The user's own
confirm or revert still wins while the check runs: the engine looks at the spec first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from vmresize.api.hosttask import TaskAction
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.conditions import HEALTH_PASSED
from vmresize.operator.decisions.transitions import confirm, recreate, revert, stay
from vmresize.operator.decisions.vocabulary import CreateTask, Observation, State, Step

P = ResizePhase
A = TaskAction

VERDICT_GRACE = timedelta(seconds=30)
"""The agent fails the check itself at the deadline, with the last probe's error; the
operator gives it this long (several agent heartbeats) before it reverts without one."""


def _checking(s: State) -> bool:
    return bool(s.health_check) and s.current_action is A.HEALTH_CHECK


def _auto_revert(s: State, o: Observation, now: datetime, reason: str, why: str) -> Step:
    step = revert(s, o, now)
    return Step(step.phase, step.actions, reason=reason, message=f"{why}. {step.message}")


def _deleted(s: State, o: Observation, now: datetime) -> Step:
    step = revert(s, o, now)
    return Step(step.phase, step.actions, reason="Deleted",
                message=f"Deleted before confirm: reverting. {step.message}")


def health_passed(s: State, o: Observation, now: datetime) -> Step:
    """The check passed on the destination: confirm, as the timer would."""
    if s.deleting:
        return _deleted(s, o, now)
    if not _checking(s):
        return stay(s, o, now)
    step = confirm(s, o, now)
    return Step(step.phase, step.actions, reason=HEALTH_PASSED,
                message=f"Health check {s.health_check} passed ({o.message}). {step.message}")


def health_failed(s: State, o: Observation, now: datetime) -> Step:
    """The check failed: revert with its reason; a retryable failure inside the window (the
    agent could not probe) is tried again."""
    if s.deleting:
        return _deleted(s, o, now)
    if not _checking(s):
        return stay(s, o, now)
    nxt = s.current_attempt + 1
    open_ = s.health_deadline is None or now < s.health_deadline
    if o.retryable and open_ and nxt < s.task_retries:
        return Step(s.phase, (CreateTask(A.HEALTH_CHECK, s.dest_host or "", nxt),),
                    message=f"HealthCheck could not run ({o.message}); retry {nxt}")
    return _auto_revert(s, o, now, "HealthCheckFailed",
                        f"Health check {s.health_check} failed: {o.message}")


def health_waiting(s: State, o: Observation, now: datetime) -> Step:
    """The check runs: wait, unless the window (and the agent's grace) is over."""
    if s.deleting:
        return _deleted(s, o, now)
    if not _checking(s):
        return stay(s, o, now)
    if s.health_deadline is not None and now >= s.health_deadline + VERDICT_GRACE:
        return _auto_revert(s, o, now, "HealthCheckTimedOut",
                            f"Health check {s.health_check} gave no verdict by "
                            f"{s.health_deadline.isoformat()} (the agent on {s.dest_host} "
                            "did not report)")
    return stay(s, o, now)


def health_missing(s: State, o: Observation, now: datetime) -> Step:
    """The HealthCheck task is gone (deleted by an admin): create it again."""
    if s.deleting:
        return _deleted(s, o, now)
    if not _checking(s):
        return stay(s, o, now)
    return recreate(s, o, now)


__all__ = ["VERDICT_GRACE", "health_failed", "health_missing", "health_passed",
           "health_waiting"]
