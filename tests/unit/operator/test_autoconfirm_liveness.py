"""Auto-confirm deletes the source: it first checks that the destination's agent is alive
(issue 18, finding 7). A silent, not ready or gone destination holds it in VerifyResize,
source kept, and it confirms once the destination beats again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.support.engine_world import NS, T0, build_world
from tests.support.memstore import MemStorage

from vmresize.api.hosttask import TaskAction
from vmresize.api.resize import ResizePhase, VMResizeStatus
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

S = Settings(namespace="sys", heartbeat_stale_seconds=60)
AUTO_CONFIRM_HELD = "AutoConfirmHeld"   # transitions.AUTO_CONFIRM_HELD
RECHECK = 5.0                           # observe.HOLD_RECHECK_SECONDS


def _verify() -> MemStorage:
    """VerifyResize on h2 whose confirm window ended at T0."""
    return build_world(MemStorage(), new_flavor="medium", status=VMResizeStatus(
        phase=ResizePhase.VERIFY_RESIZE, source_host="h1", dest_host="h2",
        old_flavor="small", new_flavor="medium", verify_deadline=T0))


def _status(s: MemStorage) -> tuple[ResizePhase, str | None]:
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    return r.status.phase, r.status.reason


def _beat(s: MemStorage, host: str, stamp: str, **status: Any) -> None:
    s.patch("hosts", "", host, lambda b: b["status"].update(heartbeat=stamp, **status))


def test_a_live_destination_is_auto_confirmed() -> None:
    s = _verify()
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    assert _status(s) == (ResizePhase.CONFIRMING, "AutoConfirmed")
    assert {t.spec.action for t in s.tasks()} == {TaskAction.CONFIRM}


def test_a_silent_destination_holds_auto_confirm_until_it_beats_again() -> None:
    s = _verify()
    s.host_heard("h2")            # the operator sees h2's heartbeat once...
    s.mono += 61                  # ...and no change of it for longer than the window
    out = engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    phase, reason = _status(s)
    assert (phase, reason) == (ResizePhase.VERIFY_RESIZE, AUTO_CONFIRM_HELD)
    assert s.tasks() == [], "no Confirm: the source copy is kept"
    # Looked at again soon (not at the passed deadline: no busy loop).
    assert out.wake_at == T0 + timedelta(seconds=1 + RECHECK)
    writes = len(s.writes)
    s.mono += 5
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=6))
    assert len(s.writes) == writes, "an unchanged hold writes nothing"
    _beat(s, "h2", "2026-01-01T00:00:07Z")     # the agent is back
    s.mono += 1
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=7))
    assert _status(s) == (ResizePhase.CONFIRMING, "AutoConfirmed")
    assert {t.spec.action for t in s.tasks()} == {TaskAction.CONFIRM}


def test_a_not_ready_or_gone_destination_holds_auto_confirm() -> None:
    s = _verify()
    _beat(s, "h2", "2026-01-01T00:00:00Z", ready=False)
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    assert _status(s) == (ResizePhase.VERIFY_RESIZE, AUTO_CONFIRM_HELD)
    s.remove("hosts", "", "h2")
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=2))
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert "gone" in (r.status.message or "")
    assert s.tasks() == []


def test_a_deleted_resize_still_reverts_whatever_the_destination() -> None:
    s = _verify()
    s.mono += 61
    s.mark_deleted("vmresizes", NS, "r")
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    assert _status(s)[0] is ResizePhase.REVERTING
