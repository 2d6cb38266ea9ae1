"""The step watchdog through the engine over the in-memory storage: a copy whose peer went
silent rolls back by itself, the source first; the daemon is told when to look again."""

from __future__ import annotations

from datetime import datetime, timedelta

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


def _migrating(peer_heartbeat: datetime, task_heartbeat: datetime) -> tuple[MemStorage, str]:
    """A resize in Migrating whose MigrateDisk runs on h1, sending to h2."""
    s = build_world(
        MemStorage(), new_flavor="medium", instance_phase=InstancePhase.RESIZING,
        hosts=[ready_host("h1"), ready_host("h2", heartbeat=peer_heartbeat)],
        status=VMResizeStatus(phase=ResizePhase.MIGRATING, source_host="h1", dest_host="h2",
                              old_flavor="small", new_flavor="medium",
                              dest_disk_path="b/disk.qcow2", dest_domain_name="tenant.vm"))
    r = s.resize(NS, "r")
    assert r is not None
    name = naming.task_name(r.uid, A.MIGRATE_DISK, 0)
    s.patch("vmresizes", NS, "r", lambda b: b["status"].update(currentTask=name))
    s.put(HostTask(
        metadata={"name": name, "namespace": SYS,
                  "creationTimestamp": (T0 - timedelta(seconds=5)).isoformat()},
        spec=HostTaskSpec(host="h1", action=A.MIGRATE_DISK, owner=f"{NS}/r", owner_uid=r.uid,
                          instance=f"{NS}/vm",
                          peer=PeerHost(name="h2", address="127.0.0.1", port=22,
                                        host_key="ssh-ed25519 AAAA")),
        status=HostTaskStatus(phase=TaskPhase.RUNNING, attempt=1, started_at=T0,
                              heartbeat=task_heartbeat)))
    return s, r.uid


def test_a_frozen_destination_rolls_the_copy_back_and_restarts_the_source_first() -> None:
    s, uid = _migrating(peer_heartbeat=T0, task_heartbeat=T0 + timedelta(seconds=60))
    now = T0 + timedelta(seconds=20)
    out = engine.reconcile(s, S, NS, "r", now)
    assert resize_phase(s) is ResizePhase.MIGRATING
    # Nothing changed and no event will come from a frozen agent: wake at the expiry.
    assert out.wake_at == T0 + timedelta(seconds=30)
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
    s, _ = _migrating(peer_heartbeat=T0 + timedelta(seconds=60), task_heartbeat=T0)
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=25))
    assert resize_phase(s) is ResizePhase.MIGRATING
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=35))
    assert resize_phase(s) is ResizePhase.ROLLING_BACK


def test_the_daemon_sleeps_until_the_watchdog_deadline_if_sooner() -> None:
    # The daemon does not poll (fleet branch): it sleeps until an event or the deadline.
    soon = driver.now() + timedelta(seconds=2)
    assert 1.5 < (driver.until(soon) or 0) < 2.5
    assert 61 < (driver.until(soon + timedelta(seconds=60)) or 0) < 63
    assert driver.until(None) is None
    assert driver.until(driver.now() - timedelta(seconds=9)) == 0.01
