"""The per-object daemon loop: the events of a step survive kopf cancelling the daemon."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from vmresize.operator.reconcile import driver
from vmresize.operator.reconcile.engine import Outcome


class _Stopped:
    """The shape of kopf's daemon stop flag that the loop uses."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __bool__(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


async def test_cancelled_daemon_still_posts_the_final_steps_events(
        monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(driver, "post", lambda body, events: posted.extend(events))
    entered, release = threading.Event(), threading.Event()

    def reconcile(now: datetime) -> Outcome:
        entered.set()
        release.wait(timeout=10)
        return Outcome(done=True, changed=True, events=[("Normal", "Confirmed", "done")])

    body: dict[str, Any] = {}
    daemon = asyncio.ensure_future(driver.run(body, "uid-1", reconcile, driver.Wakeups(),
                                              _Stopped(), poll_seconds=5,
                                                  locks=driver.Locks()))
    await asyncio.to_thread(entered.wait, 10)
    daemon.cancel()          # what kopf does once the step has written a final phase
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await daemon
    for _ in range(100):     # the shielded step finishes on its own
        if posted:
            break
        await asyncio.sleep(0.02)
    assert posted == [("Normal", "Confirmed", "done")]


async def test_a_finished_step_stops_the_loop_after_posting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(driver, "post", lambda body, events: posted.extend(events))
    steps = iter([Outcome(changed=True, events=[("Normal", "Migrating", "a")]),
                  Outcome(done=True, changed=True, events=[("Normal", "Confirmed", "b")])])
    await asyncio.wait_for(driver.run({}, "uid-2", lambda now: next(steps), driver.Wakeups(),
                                      _Stopped(), poll_seconds=5, locks=driver.Locks()),
                           timeout=10)
    assert [reason for _, reason, _ in posted] == ["Migrating", "Confirmed"]


async def test_steps_of_one_owner_never_overlap() -> None:
    """The daemon and the delete handler call the same step: never at once for one UID
    (they decided concurrently from different reads before), while other UIDs go on."""
    locks = driver.Locks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    guard = threading.Lock()

    def stepper(uid: str) -> Any:
        def reconcile(now: datetime) -> Outcome:
            with guard:
                inside[uid] += 1
                most[uid] = max(most[uid], inside[uid])
            threading.Event().wait(0.05)
            with guard:
                inside[uid] -= 1
            return Outcome()
        return reconcile

    await asyncio.gather(*(driver.step(locks, uid, stepper(uid))
                           for uid in ("a", "a", "a", "b", "b")))
    assert most == {"a": 1, "b": 1}


async def _steps_within(seconds: float, outcome: Outcome, wake_after: float | None = None,
                        ) -> list[float]:
    """Run the loop for ``seconds`` over a step that always returns ``outcome``; the times
    (from the start) at which it stepped. ``wake_after``: wake the daemon then."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    times: list[float] = []

    def reconcile(now: datetime) -> Outcome:
        times.append(loop.time() - t0)
        return outcome

    wakeups, stopped = driver.Wakeups(), _Stopped()
    daemon = asyncio.ensure_future(driver.run({}, "uid-w", reconcile, wakeups, stopped,
                                              poll_seconds=0.01, locks=driver.Locks()))
    if wake_after is not None:
        await asyncio.sleep(wake_after)
        wakeups.wake("uid-w")
    await asyncio.sleep(seconds - (wake_after or 0))
    stopped._event.set()
    await asyncio.wait_for(daemon, timeout=5)
    return times


async def test_a_waiting_step_is_not_polled_only_woken() -> None:
    """Nothing changed and no deadline: the loop sleeps until woken, however short the
    retry interval (a thousand resizes waiting cost nothing)."""
    times = await _steps_within(0.6, Outcome(), wake_after=0.3)
    assert len(times) == 2, times
    assert times[1] >= 0.3


async def test_a_deadline_wakes_the_step_without_an_event() -> None:
    """The auto-confirm deadline (Outcome.wake_at) wakes the loop by itself, not before."""
    at = driver.now() + timedelta(seconds=0.3)
    times = await _steps_within(0.5, Outcome(wake_at=at))
    assert len(times) >= 2, times
    assert times[1] >= 0.29
