"""A rollback from Migrating never leaves the Instance saying Running (invariant 11).

Found by the model test (issue 18, finding 8): MigrateDisk powered the source off, then
failed (or stalled); the rollback starts the source again with RestoreSource, but until it
has run (for as long as its agent is frozen) the Instance still said Running, the power
state it had before the move, for a VM that was off.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tests.support.engine_world import NS, T0, build_world
from tests.support.memstore import MemStorage

from vmresize.api import naming
from vmresize.api.hosttask import HostTask, HostTaskSpec, HostTaskStatus, TaskAction, TaskPhase
from vmresize.api.instance import PowerState
from vmresize.api.resize import ResizePhase, VMResizeStatus
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

S = Settings(namespace="sys")
STATUS: dict[str, Any] = {"source_host": "h1", "dest_host": "h2", "old_flavor": "small",
                          "new_flavor": "medium"}


def _migrating(task_status: HostTaskStatus, *, deleting: bool = False) -> MemStorage:
    s = build_world(MemStorage(), new_flavor="medium", status=VMResizeStatus(
        phase=ResizePhase.MIGRATING, **STATUS))
    r = s.resize(NS, "r")
    assert r is not None
    name = naming.task_name(r.uid, TaskAction.MIGRATE_DISK, 0)
    s.patch("vmresizes", NS, "r", lambda b: b["status"].update(currentTask=name))
    s.patch("instances", NS, "vm", lambda b: b["status"].update(
        powerState="Running", activeResize="r", activeResizeUid=r.uid, phase="Resizing"))
    s.put(HostTask(metadata={"name": name, "namespace": "sys"}, spec=HostTaskSpec(
        host="h1", action=TaskAction.MIGRATE_DISK, owner=f"{NS}/r", owner_uid=r.uid,
        instance=f"{NS}/vm"), status=task_status))
    if deleting:
        s.mark_deleted("vmresizes", NS, "r")
    return s


def _power(s: MemStorage) -> PowerState | None:
    inst = s.instance(NS, "vm")
    assert inst is not None
    assert inst.status is not None
    return inst.status.power_state


@pytest.mark.parametrize(("task_status", "deleting", "power"), [
    (HostTaskStatus(phase=TaskPhase.FAILED, message="send failed", retryable=False), False,
     PowerState.UNKNOWN),
    (HostTaskStatus(phase=TaskPhase.RUNNING, attempt=1, started_at=T0, heartbeat=T0), False,
     PowerState.UNKNOWN),
    (HostTaskStatus(phase=TaskPhase.SUCCEEDED), True, PowerState.SHUTOFF),
], ids=["failed", "stalled", "deleted-after-the-copy"])
def test_a_rollback_from_migrating_does_not_say_running(
        task_status: HostTaskStatus, deleting: bool, power: PowerState) -> None:
    s = _migrating(task_status, deleting=deleting)
    if task_status.phase is TaskPhase.RUNNING:
        # Stalled: the operator saw the task running, then nothing changed for longer than
        # the stale window on its own clock.
        engine.reconcile(s, S, NS, "r", T0)
        s.mono += S.step_stale_seconds + 1
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=S.step_stale_seconds + 1))
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is ResizePhase.ROLLING_BACK
    assert r.status.current_task == naming.task_name(r.uid, TaskAction.RESTORE_SOURCE, 0)
    assert _power(s) is power


@pytest.mark.parametrize(("phase", "rollback_from", "power"), [
    (ResizePhase.REVERTING, None, PowerState.SHUTOFF),
    (ResizePhase.ROLLING_BACK, "Finishing", PowerState.SHUTOFF),
    (ResizePhase.ROLLING_BACK, "Preparing", PowerState.RUNNING),   # never powered off
], ids=["reverting", "rolling-back-from-finishing", "rolling-back-from-preparing"])
def test_after_cleanup_dest_the_instance_is_off_until_restore_source(
        phase: ResizePhase, rollback_from: str | None, power: PowerState) -> None:
    """Found by the model test at 2,000 examples: a revert deleted the new copy (which ran
    since Finish), then waited for RestoreSource with the Instance saying Running."""
    s = build_world(MemStorage(), new_flavor="medium", status=VMResizeStatus(
        phase=phase, rollback_from=rollback_from, **STATUS))
    r = s.resize(NS, "r")
    assert r is not None
    name = naming.task_name(r.uid, TaskAction.CLEANUP_DEST, 0)
    s.patch("vmresizes", NS, "r", lambda b: b["status"].update(currentTask=name))
    s.patch("instances", NS, "vm", lambda b: b["status"].update(
        powerState="Running", activeResize="r", activeResizeUid=r.uid, phase="Resizing"))
    s.put(HostTask(metadata={"name": name, "namespace": "sys"}, spec=HostTaskSpec(
        host="h2", action=TaskAction.CLEANUP_DEST, owner=f"{NS}/r", owner_uid=r.uid,
        instance=f"{NS}/vm"), status=HostTaskStatus(phase=TaskPhase.SUCCEEDED)))
    engine.reconcile(s, S, NS, "r", T0)
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is phase
    assert r.status.current_task == naming.task_name(r.uid, TaskAction.RESTORE_SOURCE, 0)
    assert _power(s) is power


@pytest.mark.parametrize("retryable", [True, False], ids=["retried", "stuck"])
def test_a_failed_cleanup_dest_of_a_revert_does_not_say_running(retryable: bool) -> None:
    """Found by the model test at 2,000 examples: CleanupDest of a revert deleted the new
    copy, its agent restarted, the resumed attempt failed; the resize waited
    (CleanupDestStuck) with the Instance saying Running for a VM off on both hosts."""
    s = build_world(MemStorage(), new_flavor="medium", status=VMResizeStatus(
        phase=ResizePhase.REVERTING, **STATUS))
    r = s.resize(NS, "r")
    assert r is not None
    name = naming.task_name(r.uid, TaskAction.CLEANUP_DEST, 0)
    s.patch("vmresizes", NS, "r", lambda b: b["status"].update(currentTask=name))
    s.patch("instances", NS, "vm", lambda b: b["status"].update(
        powerState="Running", activeResize="r", activeResizeUid=r.uid, phase="Resizing"))
    s.put(HostTask(metadata={"name": name, "namespace": "sys"}, spec=HostTaskSpec(
        host="h2", action=TaskAction.CLEANUP_DEST, owner=f"{NS}/r", owner_uid=r.uid,
        instance=f"{NS}/vm"), status=HostTaskStatus(phase=TaskPhase.FAILED, message="boom",
                                                   retryable=retryable)))
    engine.reconcile(s, S, NS, "r", T0)
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is ResizePhase.REVERTING
    assert _power(s) is PowerState.UNKNOWN
