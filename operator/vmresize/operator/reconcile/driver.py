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

It also holds the two speed-ups wrapped around the engine's beats (snapshot, decide,
record, act), which are written without them: :func:`fold` takes several steps of one
resize in one call, and :func:`read_ahead` overlaps a task's reads with the status write
that names it. Each says what it saves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

import kopf

from vmresize.api.resize import ResizePhase, VMResize
from vmresize.operator.errors import ApiConflictError, ApiUnavailableError, NotReadyError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Outcome:
    """The result of one reconcile step: the phase reached, whether the object is finished, whether
    anything was written (else the daemon sleeps until an event wakes it, or until
    ``wake_at`` if that is set), and the events to post."""

    phase: ResizePhase | None = None
    done: bool = False
    changed: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)   # type, reason, text
    wake_at: datetime | None = None   # look again by then at the latest (watchdog, deadlines)


Reconcile = Callable[[datetime], Outcome]


@dataclass(frozen=True)
class StepResult:
    """One decision of a resize, recorded and acted on: its ``outcome``; the resize as
    ``written`` (None: nothing was); and whether that write ``owes`` effects (recorded in
    ``status.pending``, now carried out, but not yet cleared in the API)."""

    outcome: Outcome
    written: VMResize | None = None
    owes: bool = False


#: Decisions one call takes in a row, each right after the effects of the one before.
FOLDED_STEPS = 4


def fold(r: VMResize, step: Callable[[VMResize], StepResult],
         carry_out: Callable[[VMResize], VMResize], clear: Callable[[VMResize], object]
         ) -> Outcome:
    """Steps of ``r`` in a row, up to :data:`FOLDED_STEPS`.

    Saves one status write per step that records effects (Pending's lock and Scheduling's
    claim: two writes fewer before Preparing), and the read of the resize between steps.
    A step whose write recorded effects (``pending``) carries them out, and the next step
    follows at once from that write: its decision write also clears them. The order stays
    decide, record, then act: every effect and task is named by a status already written;
    only the clearing of effects already done waits for the next write (a crash or 409
    before it just makes the next step carry them out once more, all being idempotent).
    ``carry_out`` carries out what a read resize still owes (the act of a step before
    whose clearing never came); ``clear`` writes that clearing when no decision follows."""
    owed = bool(r.status is not None and r.status.pending)
    if owed:
        r = carry_out(r)
    out: Outcome | None = None
    for n in range(FOLDED_STEPS):
        try:
            res = step(r)
            if res.written is None and owed:
                clear(r)   # no decision came to carry the clearing
            elif res.written is not None and res.owes and n == FOLDED_STEPS - 1:
                clear(res.written)   # enough in a row: let the driver step again
        except (ApiConflictError, ApiUnavailableError, NotReadyError):
            if out is None:
                raise
            # The steps before are written and carried out (their events still go out);
            # the driver's next step meets this again from a read. Not done, whatever the
            # steps before decided: a 409 says the resize changed (e.g. it is being
            # deleted, which a finished RollbackFailed must still see; the model test).
            log.info("%s/%s: the step after a folded one failed; the next step redoes it",
                     r.namespace, r.name, exc_info=True)
            return replace(out, done=False)
        more = res.outcome
        out = more if out is None else Outcome(
            phase=more.phase, done=more.done, changed=True, events=out.events + more.events,
            wake_at=more.wake_at)
        if res.written is None or not res.owes:
            return out
        r, owed = res.written, True
    assert out is not None
    return out


#: Reads for the task a step is about to create go out while its status is written.
_READS = ThreadPoolExecutor(8, thread_name_prefix="task-inputs")


def read_ahead(read: Callable[[], T]) -> Future[T]:
    """Start ``read`` now, in a pool thread, for a result wanted after the status write.

    Saves one round trip per step that creates a task: the task's inputs (the Instance,
    the destination Host) are read while the status that names the task is written, not
    after it. Reads only, so the order decide, record, then act is kept: the task is
    created from them after the write."""
    return _READS.submit(read)


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
            except ApiConflictError as e:
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
