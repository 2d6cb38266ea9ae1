"""The step watchdog (pure): has the current HostTask stopped making progress?

A running step's agent refreshes the task's ``status.heartbeat`` every few seconds and
every agent refreshes its Host's heartbeat. A frozen (SIGSTOPped), partitioned or wedged
agent stops both, and nothing else would ever tell the operator: no event arrives, and a
powered-off VM would stay off for as long as the freeze lasts (issue 9, finding 6). A dead
agent is restarted and resumes its Running tasks, refreshing their heartbeat.

The clocks that count (each against one window, ``VMRESIZE_STEP_STALE_SECONDS``):

* a Running task: its heartbeat, else its start, else its creation;
* a task not yet accepted: its creation *and* its host's heartbeat (an agent that is alive
  but slow to pick a task up is left alone);
* MigrateDisk also needs its peer, the destination's receiver: a frozen destination leaves
  the source beating while the copy stands still, and only its Host heartbeat tells.

The engine fills a :class:`TaskClock`, calls :func:`stalled` and hands the observation to
the lifecycle, whose table says what a stall means in each phase; :func:`next_check` is
when to look again if nothing else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vmresize.operator.decisions.vocabulary import Kind, Observation

REASON = "StepStalled"


@dataclass(frozen=True)
class TaskClock:
    """What the watchdog knows of the current task and the agents it depends on."""

    task: str
    host: str
    running: bool                         # accepted by its agent (Running), else Pending
    created: datetime | None = None
    started: datetime | None = None
    heartbeat: datetime | None = None
    host_heartbeat: datetime | None = None
    peer: str | None = None               # MigrateDisk: the destination host
    peer_heartbeat: datetime | None = None


def _signs(c: TaskClock) -> list[tuple[datetime, str]]:
    """The last sign of life of each party the step depends on, with who it is."""
    out: list[tuple[datetime, str]] = []
    if c.running:
        last = c.heartbeat or c.started or c.created
        if last is not None:
            out.append((last, f"HostTask {c.task} on host {c.host}: no heartbeat"))
    elif c.created is not None and c.host_heartbeat is not None:
        out.append((max(c.created, c.host_heartbeat),
                    f"HostTask {c.task} not started: the agent of host {c.host} is silent"))
    if c.peer is not None and c.peer_heartbeat is not None:
        out.append((c.peer_heartbeat, f"HostTask {c.task} on host {c.host} waits for peer "
                                      f"host {c.peer}, whose agent is silent"))
    return out


def stalled(c: TaskClock, now: datetime, window: float) -> Observation | None:
    """A ``TASK_STALLED`` observation if some sign of life is older than ``window`` seconds;
    None while every clock is fresh, or when none is known (no judgement on no data)."""
    for last, who in sorted(_signs(c)):
        age = (now - last).total_seconds()
        if age > window:
            return Observation(Kind.TASK_STALLED, reason=REASON, host=c.host, message=(
                f"{who} for {age:.0f} s (since {last:%H:%M:%S}Z; the step window is "
                f"{window:.0f} s)"))
    return None


def next_check(c: TaskClock, window: float) -> datetime | None:
    """The earliest moment the step would count as stalled if nothing changes."""
    signs = _signs(c)
    return min(signs)[0] + timedelta(seconds=window) if signs else None
