"""The step watchdog (pure): has the current HostTask stopped making progress?

A running step's agent refreshes the task's ``status.heartbeat`` every few seconds and
every agent refreshes its Host's heartbeat. A frozen (SIGSTOPped), partitioned or wedged
agent stops both, and nothing else would ever tell the operator: no event arrives, and a
powered-off VM would stay off for as long as the freeze lasts (issue 9, finding 6). A dead
agent is restarted and resumes its Running tasks, refreshing their heartbeat.

The signs of life that count (each against one window, ``VMRESIZE_STEP_STALE_SECONDS``),
each the moment the operator *saw* it change, on its own monotonic clock
(:mod:`.liveness`): the agents' stamps are never compared with the operator's clock, so an
agent whose clock is off is judged like any other (issue 18, finding 4):

* a Running task: its last change (every heartbeat the agent writes is one), or when the
  operator first saw it;
* a task not yet accepted: the same, *and* its host's heartbeat (an agent that is alive
  but slow to pick a task up is left alone);
* MigrateDisk also needs its peer, the destination's receiver: a frozen destination leaves
  the source beating while the copy stands still, and only its Host heartbeat tells.

The engine fills a :class:`TaskClock`, calls :func:`stalled` and hands the observation to
the lifecycle, whose table says what a stall means in each phase; :func:`next_check` is
when to look again if nothing else happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmresize.operator.decisions.liveness import silent_for
from vmresize.operator.decisions.vocabulary import Kind, Observation

REASON = "StepStalled"


@dataclass(frozen=True)
class TaskClock:
    """What the watchdog knows of the current task and the agents it depends on."""

    task: str
    host: str
    running: bool                         # accepted by its agent (Running), else Pending
    #: When the operator saw the task change last (or first saw it), on its monotonic clock.
    heard: float | None = None
    #: When it saw the task's host's heartbeat change (None: never beat, or no Host).
    host_heard: float | None = None
    peer: str | None = None               # MigrateDisk: the destination host
    peer_heard: float | None = None


def _signs(c: TaskClock) -> list[tuple[float, str]]:
    """The last sign of life of each party the step depends on, with who it is."""
    out: list[tuple[float, str]] = []
    if c.running:
        if c.heard is not None:
            out.append((c.heard, f"HostTask {c.task} on host {c.host}: no heartbeat"))
    elif c.heard is not None and c.host_heard is not None:
        out.append((max(c.heard, c.host_heard),
                    f"HostTask {c.task} not started: the agent of host {c.host} is silent"))
    if c.peer is not None and c.peer_heard is not None:
        out.append((c.peer_heard, f"HostTask {c.task} on host {c.host} waits for peer "
                                  f"host {c.peer}, whose agent is silent"))
    return out


def stalled(c: TaskClock, now: float, window: float) -> Observation | None:
    """A ``TASK_STALLED`` observation if some party has shown no sign of life for longer
    than ``window`` seconds (``now``: the operator's monotonic clock); None while every
    party is fresh, or when none is known (no judgement on no data)."""
    for last, who in sorted(_signs(c)):
        age = silent_for(last, now)
        if age > window:
            return Observation(Kind.TASK_STALLED, reason=REASON, host=c.host, message=(
                f"{who} for {age:.0f} s (as seen by the operator; the step window is "
                f"{window:.0f} s)"))
    return None


def next_check(c: TaskClock, now: float, window: float) -> float | None:
    """In how many seconds the step would count as stalled if nothing changes (None: no
    party known)."""
    signs = _signs(c)
    return max(0.0, min(signs)[0] + window - now) if signs else None
