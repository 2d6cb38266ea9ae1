"""Is an agent still alive? Judged on the operator's own clock, never across two machines.

An agent stamps its heartbeats with its own clock. Comparing that stamp with the
operator's clock judges the two clocks, not the agent: an agent 90 s behind looked dead
while healthy, and one an hour ahead hid a freeze for that hour (issue 18, finding 4).
So, as Kubernetes' node lifecycle controller does with a Node's lease, the operator never
reads a heartbeat as a time: it notes *when it saw the heartbeat change*, on its own
monotonic clock (:class:`Sighting`), and a party is silent for as long as nothing changed.

After a start the operator has seen nothing yet. Every party it first meets counts as
seen at that moment, so a live agent keeps one stale window to show a change (the
controller's grace period) and a dead one is noticed one window after the start. A
Host the operator had already marked not ready stays so until its agent beats again
(the scheduler also needs ``ready``).

Times here are seconds on the operator's monotonic clock (``time.monotonic()`` in the
process, a plain number in tests). Pure.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sighting:
    """The last value seen of something an agent refreshes, and when it was first seen so.

    ``value`` is compared, never interpreted: a heartbeat stamp from a clock an hour off
    counts exactly like a right one, and one that goes backwards is a change too."""

    value: Hashable
    at: float


def sight(last: Sighting | None, value: Hashable, now: float) -> Sighting:
    """The sighting after seeing ``value`` at ``now``: unchanged while the value is, else
    a new one from ``now`` (also the first time)."""
    if last is not None and last.value == value:
        return last
    return Sighting(value, now)


def silent_for(at: float, now: float) -> float:
    """Seconds since ``at`` (never negative)."""
    return max(0.0, now - at)


def stale(at: float | None, now: float, window: float) -> bool:
    """Whether a party last seen changing at ``at`` (None: never seen alive) is silent for
    longer than ``window`` seconds."""
    return at is None or silent_for(at, now) > window
