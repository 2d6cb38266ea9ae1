"""The step watchdog through the engine over the in-memory storage: a copy whose peer went
silent rolls back by itself, the source first; the daemon is told when to look again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.memstore import MemStorage

from vmresize.api import naming
from vmresize.api.flavor import Flavor, FlavorSpec
from vmresize.api.host import Host, HostSpec, HostStatus, MigrationEndpoint
from vmresize.api.hosttask import HostTask, HostTaskSpec, HostTaskStatus, PeerHost, TaskPhase
from vmresize.api.hosttask import TaskAction as A
from vmresize.api.instance import Instance, InstancePhase, InstanceSpec, InstanceStatus
from vmresize.api.meta import Resources
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec, VMResizeStatus
from vmresize.operator.reconcile import driver, engine
from vmresize.operator.settings import Settings

NS, SYS = "tenant", "sys"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = Settings(namespace=SYS, step_stale_seconds=30)


def _migrating(peer_heartbeat: datetime, task_heartbeat: datetime) -> tuple[MemStorage, str]:
    """A resize in Migrating whose MigrateDisk runs on h1, sending to h2."""
    s = MemStorage()
    for h, beat in (("h1", T0), ("h2", peer_heartbeat)):
        s.put(Host(metadata={"name": h}, spec=HostSpec(), status=HostStatus(
            capacity=Resources(vcpus=8, memory_mib=8704, disk_gib=100), ready=True,
            heartbeat=beat, migration_endpoint=MigrationEndpoint(address="127.0.0.1",
                                                                 port=22),
            host_key="ssh-ed25519 AAAA")))
    for f, n in (("small", 1), ("medium", 2)):
        s.put(Flavor(metadata={"name": f}, spec=FlavorSpec(vcpus=n, memory_mib=1024 * n,
                                                           disk_gib=10 * n)))
    s.put(Instance(metadata={"name": "vm", "namespace": NS}, spec=InstanceSpec(flavor="small"),
                   status=InstanceStatus(phase=InstancePhase.RESIZING, host="h1",
                                         flavor="small", vcpus=1, memory_mib=1024,
                                         disk_gib=10, domain_name="tenant.vm",
                                         disk_path="a/disk.qcow2")))
    s.put(VMResize(metadata={"name": "r", "namespace": NS},
                   spec=VMResizeSpec(instance_name="vm", flavor="medium"),
                   status=VMResizeStatus(phase=ResizePhase.MIGRATING, source_host="h1",
                                         dest_host="h2", old_flavor="small",
                                         new_flavor="medium", dest_disk_path="b/disk.qcow2",
                                         dest_domain_name="tenant.vm")))
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


def _phase(s: MemStorage) -> ResizePhase:
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    return r.status.phase


def test_a_frozen_destination_rolls_the_copy_back_and_restarts_the_source_first() -> None:
    s, uid = _migrating(peer_heartbeat=T0, task_heartbeat=T0 + timedelta(seconds=60))
    now = T0 + timedelta(seconds=20)
    out = engine.reconcile(s, S, NS, "r", now)
    assert _phase(s) is ResizePhase.MIGRATING
    # Nothing changed and no event will come from a frozen agent: wake at the expiry.
    assert out.wake_at == T0 + timedelta(seconds=30)
    out = engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=31))
    assert _phase(s) is ResizePhase.ROLLING_BACK
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
    assert _phase(s) is ResizePhase.MIGRATING
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=35))
    assert _phase(s) is ResizePhase.ROLLING_BACK


def test_the_daemon_sleeps_until_the_watchdog_deadline_if_sooner() -> None:
    # The daemon does not poll (fleet branch): it sleeps until an event or the deadline.
    soon = driver.now() + timedelta(seconds=2)
    assert 1.5 < (driver.until(soon) or 0) < 2.5
    assert 61 < (driver.until(soon + timedelta(seconds=60)) or 0) < 63
    assert driver.until(None) is None
    assert driver.until(driver.now() - timedelta(seconds=9)) == 0.01
