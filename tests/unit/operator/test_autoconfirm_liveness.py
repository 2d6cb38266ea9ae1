"""Auto-confirm deletes the source: it first checks that the destination's agent is alive
and that the domain still runs there (issue 18, finding 7d). A silent, not ready or gone
destination holds it in VerifyResize, source kept, and it confirms once the destination
beats again; a live one is asked (a HealthCheck without a probe) whether the domain runs,
and a "no" holds it too, with the agent's words."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.support.engine_world import NS, T0, build_world
from tests.support.memstore import MemStorage

from vmresize.api.hosttask import HostTask, TaskAction
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
        old_flavor="small", new_flavor="medium", verify_deadline=T0,
        dest_domain_name="tenant.vm"))


def _status(s: MemStorage) -> tuple[ResizePhase, str | None]:
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    return r.status.phase, r.status.reason


def _beat(s: MemStorage, host: str, stamp: str, **status: Any) -> None:
    s.patch("hosts", "", host, lambda b: b["status"].update(heartbeat=stamp, **status))


def _check(s: MemStorage) -> HostTask:
    """The one look at the destination the resize asked for (and nothing else)."""
    (task,) = s.tasks()
    assert task.spec.action is TaskAction.HEALTH_CHECK
    assert task.spec.host == "h2"
    assert task.spec.health_check is None, "no probe: only whether the domain runs"
    assert task.spec.domain_name
    return task


def _answer(s: MemStorage, task: HostTask, phase: str, message: str,
            retryable: bool = False) -> None:
    """The destination's agent ends the check as the real one does."""
    s.patch("hosttasks", task.namespace or "", task.name, lambda b: b.update(status={
        "phase": phase, "message": message, "retryable": retryable, "attempt": 1,
        **({"result": {"powerState": "Running", "domainName": task.spec.domain_name}}
           if phase == "Succeeded" else {})}))


def _checked(s: MemStorage, at: float) -> None:
    """The window passed with h2 alive: h2 is asked; it says the domain runs; confirmed."""
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=at))
    assert _status(s) == (ResizePhase.VERIFY_RESIZE, "AutoConfirmChecking")
    _answer(s, _check(s), "Succeeded", "domain default.vm runs")
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=at + 1))
    assert _status(s) == (ResizePhase.CONFIRMING, "AutoConfirmed")
    assert {t.spec.action for t in s.tasks()} == {TaskAction.HEALTH_CHECK, TaskAction.CONFIRM}


def test_a_live_destination_is_auto_confirmed() -> None:
    _checked(_verify(), 1)


def test_a_destination_where_the_domain_does_not_run_holds_auto_confirm() -> None:
    """Issue 18, finding 7d: the agent is alive, but the copy there is off (or gone): the
    source is the only copy that may still hold the VM's latest state; it is kept."""
    s = _verify()
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    task = _check(s)
    _answer(s, task, "Failed", "domain default.vm is Shutoff, not Running")
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=2))
    assert _status(s) == (ResizePhase.VERIFY_RESIZE, AUTO_CONFIRM_HELD)
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert "Shutoff, not Running" in (r.status.message or "")
    assert [t.spec.action for t in s.tasks()] == [TaskAction.HEALTH_CHECK], "no Confirm"
    writes = len(s.writes)
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=30))
    assert len(s.writes) == writes, "an unchanged hold writes nothing"
    # The user still decides.
    s.patch("vmresizes", NS, "r", lambda b: b["spec"].update(revert=True))
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=31))
    assert _status(s)[0] is ResizePhase.REVERTING


def test_a_check_the_agent_could_not_run_is_retried_then_holds() -> None:
    s = _verify()
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    for attempt in range(S.task_retries):
        (task,) = [t for t in s.tasks() if t.status is None]
        assert task.name.endswith(f"-{attempt}")
        _answer(s, task, "Failed", "libvirt unreachable", retryable=True)
        engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=2 + attempt))
    assert _status(s) == (ResizePhase.VERIFY_RESIZE, AUTO_CONFIRM_HELD)
    assert {t.spec.action for t in s.tasks()} == {TaskAction.HEALTH_CHECK}


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
    _checked(s, 7)


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
