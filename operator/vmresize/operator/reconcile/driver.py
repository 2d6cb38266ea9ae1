"""The loop behind each per-object kopf daemon, and the wake-ups that speed it up.

Why a daemon per active VMResize/Instance (rather than only watch handlers): a resize is
a long conversation with agents and with time (auto-confirm). The daemon runs the
engine's step until nothing changes, then sleeps until woken by an event (a HostTask of
this owner changed, the user changed the spec, the Instance a Pending resize waits for
changed) or until the step's deadline (``Outcome.wake_at``: auto-confirm, the step
watchdog's next look, since a frozen agent sends no event). It never
polls: a resize waiting in VerifyResize costs no request between its events and its
deadline, which is what lets thousands of them wait. Events are not missed: kopf's watch
resumes from the last resourceVersion it saw, and after a re-list the handlers compare
what they saw last (:class:`Seen`), so a change made while the watch was down still wakes its
owner. Only a failed step is retried after a delay. kopf starts the daemon again for every
live object after a restart (its first step runs at once), and with peering only the
active operator runs daemons. All state is in the API, so the daemon keeps nothing that a
kill -9 could lose.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import kopf

from vmresize.operator.errors import ApiConflict
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


class Seen:
    """The last version (a generation, or a digest of a status) seen per object, for event
    handlers that wake an owner only when something changed: kopf hands over every object
    again after a re-list, and waking every owner then would cost one step each."""

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}

    def changed(self, uid: str, version: str) -> bool:
        """Whether ``version`` is new for ``uid`` (and remember it)."""
        if self._versions.get(uid) == version:
            return False
        self._versions[uid] = version
        return True

    def forget(self, uid: str) -> None:
        """Drop a deleted object."""
        self._versions.pop(uid, None)


class Wakeups:
    """In-memory events keyed by owner UID. A wake-up stays set until the daemon's next
    sleep (so one that comes during a step is not lost); one that comes before the daemon
    runs is not needed: its first step reads everything."""

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
    """Step until done (or stopped), sleeping between steps until woken or until the step's
    deadline; a step that failed unexpectedly is retried after ``4 * poll_seconds``."""
    wake = wakeups.event(uid)
    conflicts = 0
    try:
        while not stopped:
            wake.clear()
            try:
                # kopf cancels the daemon once the step it runs writes a final phase; the
                # shield lets that step's events still be posted (they were lost before).
                out = await asyncio.shield(_step_and_post(body, uid, reconcile, locks))
                conflicts = 0
            except ApiConflict as e:
                # Someone wrote in between (kopf's own finalizer patch races the first
                # step of every new object): step again from a fresh read at once; back
                # off only when it happens again and again.
                conflicts += 1
                if conflicts > 1:
                    log.info("%s: %s (retrying in %ss)", uid, e, e.delay)
                    await _sleep(wake, stopped, e.delay or 1.0)
                continue
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
                seconds = until(out.wake_at)
                if out.wake_at is not None and out.wake_at <= now():
                    # Past, yet the step did nothing about it: no hot loop, a retry.
                    seconds = poll_seconds
                await _sleep(wake, stopped, seconds)
    finally:
        wakeups.forget(uid)


def until(deadline: datetime | None) -> float | None:
    """Seconds from now to ``deadline`` (at least 0; a little after it, so the step sees it
    passed); None without one."""
    if deadline is None:
        return None
    return max(0.0, (deadline - now()).total_seconds()) + 0.01


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped,
                 seconds: float | None) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
