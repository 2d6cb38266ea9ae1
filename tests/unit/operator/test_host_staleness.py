"""Host readiness from the heartbeat (issue 9, item 6): a frozen agent's Host is not Ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vmresize.api.host import Host, HostStatus
from vmresize.api.meta import Condition
from vmresize.operator.reconcile.hosts import STALE_REASON, stale_update

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def host(age_seconds: float | None, *, ready: bool = True) -> Host:
    beat = None if age_seconds is None else NOW - timedelta(seconds=age_seconds)
    cond = Condition(type="Ready", status="True" if ready else "False",
                     reason="AgentRunning", last_transition_time=NOW - timedelta(hours=1))
    return Host(metadata={"name": "h1"},
                status=HostStatus(heartbeat=beat, ready=ready, conditions=[cond]))


def test_a_stale_heartbeat_turns_the_host_not_ready() -> None:
    marked = stale_update(host(300), NOW, 60)
    assert marked is not None
    assert marked.status is not None
    assert marked.status.ready is False  # the READY column
    (cond,) = marked.status.conditions
    assert (cond.status, cond.reason) == ("Unknown", STALE_REASON)
    assert "300s ago" in cond.message
    assert cond.last_transition_time == NOW


def test_a_fresh_or_already_marked_host_is_left_alone() -> None:
    assert stale_update(host(10), NOW, 60) is None
    marked = stale_update(host(300), NOW, 60)
    assert marked is not None
    assert stale_update(marked, NOW, 60) is None  # idempotent: no write every tick
    assert stale_update(host(None), NOW, 60) is not None  # never beat at all
