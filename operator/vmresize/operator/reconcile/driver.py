"""The loop behind each per-object kopf daemon, and the wake-ups that speed it up.

Why a daemon per active VMResize/Instance (rather than only watch handlers): a resize is
a long conversation with agents and with time (auto-confirm). The daemon runs the
engine's step until nothing changes, then sleeps until woken (a HostTask of this owner
changed, or the user set confirm/revert) or until ``poll_seconds`` pass, which also
covers any missed event (or until the step watchdog's deadline, if sooner: a frozen agent
sends no event). kopf starts the daemon again for every live object after a restart, and
with peering only the active operator runs daemons. All state is in the API, so the
daemon keeps nothing that a kill -9 could lose.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import kopf

from vmresize.operator.reconcile.engine import Outcome

log = logging.getLogger(__name__)
Reconcile = Callable[[datetime], Outcome]


class Locks:
    """One lock per owner UID: every step of one resize (or instance) runs alone, whether
    the per-object daemon, the delete handler or anything else calls it (they would
    otherwise decide concurrently from different reads)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, uid: str) -> asyncio.Lock:
        """The lock of the owner ``uid`` (made on first use)."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        """Drop the lock of a deleted owner (unless a step still holds it)."""
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]


async def step(locks: Locks, uid: str, reconcile: Reconcile) -> Outcome:
    """One step of the owner ``uid``, serialized with every other step of it."""
    async with locks.lock(uid):
        return await asyncio.to_thread(reconcile, now())


class Wakeups:
    """In-memory events keyed by owner UID; losing them only costs a poll interval."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, uid: str) -> asyncio.Event:
        """The event for ``uid``, created on first use; the daemon waits on it."""
        return self._events.setdefault(uid, asyncio.Event())

    def wake(self, uid: str) -> None:
        """Set the event of ``uid`` if its daemon is running; otherwise nothing."""
        ev = self._events.get(uid)
        if ev is not None:
            ev.set()

    def forget(self, uid: str) -> None:
        """Drop the event of ``uid`` when its daemon ends."""
        self._events.pop(uid, None)


def now() -> datetime:
    """The current time in UTC; the pure decisions take it as an argument."""
    return datetime.now(UTC)


def post(body: kopf.Body, events: list[tuple[str, str, str]]) -> None:
    """Post ``(type, reason, message)`` events on the object, messages cut to 1000 characters."""
    for kind, reason, message in events:
        kopf.event(body, type=kind, reason=reason, message=message[:1000])


async def _step_and_post(body: kopf.Body, uid: str, reconcile: Reconcile, locks: Locks) -> Outcome:
    out = await step(locks, uid, reconcile)
    post(body, out.events)
    return out


async def run(body: kopf.Body, uid: str, reconcile: Reconcile, wakeups: Wakeups,
              stopped: kopf.DaemonStopped, poll_seconds: float, locks: Locks) -> None:
    """Step until done (or stopped), sleeping between steps until woken or polled."""
    wake = wakeups.event(uid)
    try:
        while not stopped:
            wake.clear()
            try:
                # kopf cancels the daemon once the step it runs writes a final phase; the
                # shield lets that step's events still be posted (they were lost before).
                out = await asyncio.shield(_step_and_post(body, uid, reconcile, locks))
            except kopf.TemporaryError as e:
                log.info("%s: %s (retrying in %ss)", uid, e, e.delay)
                await _sleep(wake, stopped, e.delay or 1.0)
                continue
            except kopf.PermanentError as e:
                log.error("%s: %s", uid, e)
                await _sleep(wake, stopped, poll_seconds * 4)
                continue
            except Exception:
                # A bug or a surprise from the API: log it, keep the daemon, try again later
                # (every step is idempotent, so trying again is always safe).
                log.exception("%s: unexpected error; retrying", uid)
                await _sleep(wake, stopped, poll_seconds * 4)
                continue
            if out.done:
                return
            if not out.changed:
                await _sleep(wake, stopped, _until(out.wake_at, poll_seconds))
    finally:
        wakeups.forget(uid)


def _until(wake_at: datetime | None, poll_seconds: float) -> float:
    """Seconds to sleep: the poll interval, or less if the step watchdog's deadline (a
    frozen agent writes nothing, so no event would wake us) comes sooner."""
    if wake_at is None:
        return poll_seconds
    return min(poll_seconds, max(0.1, (wake_at - now()).total_seconds() + 0.1))


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
