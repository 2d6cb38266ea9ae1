"""The timer's auto-confirm looks before it deletes the source (pure).

A timer auto-confirm (``spec.autoConfirm.afterSeconds`` without a check, or the cluster's
default window) deletes the source copy. Until now it did so on the clock alone; issue 18
(finding 7d) asked for two facts first. The first, that the destination's agent is alive
(its Host ready and beating, on the operator's clock), :func:`~.transitions.verify_tick`
already checks (``AutoConfirmHeld``). The second is here: that the domain still runs
there, as that agent reports it. Once the window has passed, and the agent vouched for,
the resize asks the destination for a ``HealthCheck`` HostTask without a probe (the agent
only looks at the domain's state, changes nothing) and then:

===============  ==============================================================
task             decision
===============  ==============================================================
Succeeded        confirm (``AutoConfirmed``: the domain was seen running)
Failed           a retryable failure (the agent could not ask libvirt) is tried
                 again, up to ``task_retries``; otherwise hold (``AutoConfirmHeld``,
                 the agent's words): the source is kept, the user confirms or
                 reverts by hand
Waiting          wait (the user's confirm or revert still wins: the engine looks
                 at the spec first)
Missing          create it again
===============  ==============================================================

A deleted resize reverts, as in every VerifyResize rule. A health-gated auto-confirm
(``spec.autoConfirm.check``) is :mod:`.health`'s; these rules hand its tasks over there.
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.hosttask import TaskAction
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions import health
from vmresize.operator.decisions.transitions import (
    AUTO_CONFIRM_HELD,
    confirm,
    recreate,
    revert,
    stay,
)
from vmresize.operator.decisions.transitions import verify_tick as timer_tick
from vmresize.operator.decisions.vocabulary import CreateTask, Observation, State, Step

P, A = ResizePhase, TaskAction

AUTO_CONFIRMED = "AutoConfirmed"
CHECKING = "AutoConfirmChecking"


def _timer_check(s: State) -> bool:
    """The current task is this module's look at the destination (not a health check)."""
    return not s.health_check and s.current_action is A.HEALTH_CHECK


def _deleted(s: State, o: Observation, now: datetime) -> Step:
    step = revert(s, o, now)
    return Step(step.phase, step.actions, reason="Deleted",
                message=f"Deleted before confirm: reverting. {step.message}")


def verify_tick(s: State, o: Observation, now: datetime) -> Step:
    """As :func:`~.transitions.verify_tick`, but where the timer would confirm, first ask
    the destination whether the domain runs there."""
    step = timer_tick(s, o, now)
    if step.reason != AUTO_CONFIRMED:
        return step
    return Step(s.phase, (CreateTask(A.HEALTH_CHECK, s.dest_host or "", 0),), reason=CHECKING,
                message=f"Confirm window passed; asking {s.dest_host} whether the instance "
                "still runs there before deleting the copy on "
                f"{s.source_host}")


def check_passed(s: State, o: Observation, now: datetime) -> Step:
    """The domain runs on the destination: confirm (the source goes)."""
    if not _timer_check(s):
        return health.health_passed(s, o, now)
    if s.deleting:
        return _deleted(s, o, now)
    step = confirm(s, o, now)
    return Step(step.phase, step.actions, reason=AUTO_CONFIRMED,
                message=f"Confirm window passed and {s.dest_host} reports the instance "
                f"running ({o.message}). {step.message}")


def check_failed(s: State, o: Observation, now: datetime) -> Step:
    """The destination could not say the domain runs: retry what may pass, else hold."""
    if not _timer_check(s):
        return health.health_failed(s, o, now)
    if s.deleting:
        return _deleted(s, o, now)
    nxt = s.current_attempt + 1
    if o.retryable and nxt < s.task_retries:
        return Step(s.phase, (CreateTask(A.HEALTH_CHECK, s.dest_host or "", nxt),),
                    message=f"Could not ask {s.dest_host} whether the instance runs there "
                    f"({o.message}); retry {nxt}")
    return Step(s.phase, reason=AUTO_CONFIRM_HELD, message=(
        f"Confirm window passed, but {s.dest_host} does not report the instance running "
        f"({o.message}): not confirming (the source copy on {s.source_host} is kept); "
        "confirm or revert by hand"))


def check_waiting(s: State, o: Observation, now: datetime) -> Step:
    """The destination has not answered yet: wait (a deleted resize reverts)."""
    if not _timer_check(s):
        return health.health_waiting(s, o, now)
    return _deleted(s, o, now) if s.deleting else stay(s, o, now)


def check_missing(s: State, o: Observation, now: datetime) -> Step:
    """The task is gone (deleted by an admin): create it again."""
    if not _timer_check(s):
        return health.health_missing(s, o, now)
    return _deleted(s, o, now) if s.deleting else recreate(s, o, now)
