"""The step watchdog through the engine over the in-memory storage: a copy whose peer went
silent rolls back by itself, the source first; the daemon is told when to look again."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from tests.support.engine_world import NS, T0, build_world, ready_host, resize_phase
from tests.support.memstore import MemStorage

from vmresize.api import naming
from vmresize.api.hosttask import HostTask, HostTaskSpec, HostTaskStatus, PeerHost, TaskPhase
from vmresize.api.hosttask import TaskAction as A
from vmresize.api.instance import InstancePhase
from vmresize.api.resize import ResizePhase, VMResizeStatus
from vmresize.operator.reconcile import driver, engine
from vmresize.operator.settings import Settings

SYS = "sys"
S = Settings(namespace=SYS, step_stale_seconds=30)


def _migrating(agent_skew: float = 0.0) -> tuple[MemStorage, str]:
    """A resize in Migrating whose MigrateDisk runs on h1, sending to h2; the agents' clocks
    are ``agent_skew`` seconds off the operator's (their stamps say so)."""
    stamp = T0 + timedelta(seconds=agent_skew)
    s = build_world(
        MemStorage(), new_flavor="medium", instance_phase=InstancePhase.RESIZING,
        hosts=[ready_host("h1", heartbeat=stamp), ready_host("h2", heartbeat=stamp)],
        status=VMResizeStatus(phase=ResizePhase.MIGRATING, source_host="h1", dest_host="h2",
                              old_flavor="small", new_flavor="medium",
                              dest_disk_path="b/disk.qcow2", dest_domain_name="tenant.vm"))
    r = s.resize(NS, "r")
    assert r is not None
    name = naming.task_name(r.uid, A.MIGRATE_DISK, 0)
    s.patch("vmresizes", NS, "r", lambda b: b["status"].update(currentTask=name))
    s.put(HostTask(
        metadata={"name": name, "namespace": SYS,
                  "creationTimestamp": (stamp - timedelta(seconds=5)).isoformat()},
        spec=HostTaskSpec(host="h1", action=A.MIGRATE_DISK, owner=f"{NS}/r", owner_uid=r.uid,
                          instance=f"{NS}/vm",
                          peer=PeerHost(name="h2", address="127.0.0.1", port=22,
                                        host_key="ssh-ed25519 AAAA")),
        status=HostTaskStatus(phase=TaskPhase.RUNNING, attempt=1, started_at=stamp,
                              heartbeat=stamp)))
    return s, r.uid


def _beat_task(s: MemStorage, stamp: datetime) -> None:
    """The source agent refreshes its task's heartbeat (stamped on its own clock)."""
    name = next(t.name for t in s.tasks() if t.spec.action is A.MIGRATE_DISK)
    s.patch("hosttasks", SYS, name, lambda b: b["status"].update(heartbeat=stamp.isoformat()))


def _beat_host(s: MemStorage, host: str, stamp: datetime) -> None:
    s.patch("hosts", "", host, lambda b: b["status"].update(heartbeat=stamp.isoformat()))


def test_a_frozen_destination_rolls_the_copy_back_and_restarts_the_source_first() -> None:
    s, uid = _migrating()
    engine.reconcile(s, S, NS, "r", T0)   # the operator sees every party for the first time
    s.mono += 20
    _beat_task(s, T0 + timedelta(seconds=20))
    out = engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=20))
    assert resize_phase(s) is ResizePhase.MIGRATING
    # Nothing changed and no event will come from a frozen agent: wake at the expiry.
    assert out.wake_at == T0 + timedelta(seconds=30)
    s.mono += 11
    _beat_task(s, T0 + timedelta(seconds=31))
    out = engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=31))
    assert resize_phase(s) is ResizePhase.ROLLING_BACK
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.reason == "StepStalled"
    assert r.status.rollback_reason == "StepStalled"
    assert "h2" in r.status.message
    assert r.status.current_task == naming.task_name(uid, A.RESTORE_SOURCE, 0)
    assert {t.spec.action for t in s.tasks()} == {A.MIGRATE_DISK, A.RESTORE_SOURCE}
    assert [(kind, reason) for kind, reason, _ in out.events] == [("Warning", "StepStalled")]


def test_a_silent_source_agent_stalls_its_own_step() -> None:
    s, _ = _migrating()
    engine.reconcile(s, S, NS, "r", T0)
    s.mono += 25
    _beat_host(s, "h2", T0 + timedelta(seconds=25))
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=25))
    assert resize_phase(s) is ResizePhase.MIGRATING
    s.mono += 10
    _beat_host(s, "h2", T0 + timedelta(seconds=35))
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=35))
    assert resize_phase(s) is ResizePhase.ROLLING_BACK


@pytest.mark.parametrize("skew", [-120.0, 3600.0])
def test_agents_clocks_off_the_operators_are_judged_by_what_changes(skew: float) -> None:
    """Issue 18, finding 4: stamps 120 s behind are no stall while they change, and stamps
    an hour ahead hide no freeze: what counts is when the operator saw them change."""
    s, _ = _migrating(agent_skew=skew)
    engine.reconcile(s, S, NS, "r", T0)
    for t in range(10, 100, 10):   # both agents beat every 10 s, on their own clocks
        s.mono += 10
        _beat_task(s, T0 + timedelta(seconds=skew + t))
        _beat_host(s, "h2", T0 + timedelta(seconds=skew + t))
        engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=t))
        assert resize_phase(s) is ResizePhase.MIGRATING, t
    s.mono += 31   # then the source agent freezes: its last stamp stays (an hour ahead)
    _beat_host(s, "h2", T0 + timedelta(seconds=skew + 121))
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=121))
    assert resize_phase(s) is ResizePhase.ROLLING_BACK


def test_the_daemon_sleeps_until_the_watchdog_deadline_if_sooner() -> None:
    # The daemon does not poll (fleet branch): it sleeps until an event or the deadline.
    soon = driver.now() + timedelta(seconds=2)
    assert 1.5 < (driver.until(soon) or 0) < 2.5
    assert 61 < (driver.until(soon + timedelta(seconds=60)) or 0) < 63
    assert driver.until(None) is None
    assert driver.until(driver.now() - timedelta(seconds=9)) == 0.01
