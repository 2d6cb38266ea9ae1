"""Issue 18, finding 3: once a VMResize is gone without its rollback, the lock sweep
declares the instance Active on its recorded host only if the resize's HostTasks show the
VM runs there; otherwise Error, keeping the lock (pure decision, no Kubernetes)."""

from __future__ import annotations

import pytest

from vmresize.api.hosttask import HostTask, HostTaskSpec, HostTaskStatus, TaskPhase
from vmresize.api.hosttask import TaskAction as A
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.operator.decisions.gone_holder import after_gone_resize

SRC, DEST = "hv-2", "hv-1"
ST, RUN, OK, FAIL = TaskPhase.PENDING, TaskPhase.RUNNING, TaskPhase.SUCCEEDED, TaskPhase.FAILED


def task(action: A, host: str, phase: TaskPhase | None) -> HostTask:
    return HostTask(metadata={"name": f"t-{action.value.lower()}", "namespace": "sys"},
                    spec=HostTaskSpec(host=host, action=action, owner="ns/r", owner_uid="u",
                                      instance="ns/web-1"),
                    status=None if phase is None else HostTaskStatus(phase=phase))


def test_verify_resize_with_the_finalizer_removed_is_an_error_not_active_on_the_source() -> None:
    """The issue's reproduction: VM running on hv-1 (Finish done), source held on hv-2."""
    tasks = [task(A.PREPARE, DEST, OK), task(A.MIGRATE_DISK, SRC, OK), task(A.FINISH, DEST, OK)]
    v = after_gone_resize("r", SRC, tasks)
    assert v.phase is InstancePhase.ERROR
    assert v.power_state is PowerState.UNKNOWN
    assert not v.release_lock
    assert "Finish on hv-1 Succeeded" in v.message
    assert "MigrateDisk on hv-2 Succeeded" in v.message


@pytest.mark.parametrize("tasks", [
    [],
    [task(A.PREPARE, DEST, OK)],
    [task(A.PREPARE, DEST, OK), task(A.MIGRATE_DISK, SRC, None)],   # never taken up: fenced
    [task(A.PREPARE, DEST, FAIL), task(A.PREPARE, "hv-3", OK), task(A.MIGRATE_DISK, SRC, ST)],
])
def test_a_resize_that_never_powered_the_source_off_leaves_it_active(
        tasks: list[HostTask]) -> None:
    v = after_gone_resize("r", SRC, tasks)
    assert (v.phase, v.power_state, v.release_lock) == (InstancePhase.ACTIVE, None, True)


def test_a_completed_rollback_leaves_it_active_and_running_on_the_source() -> None:
    tasks = [task(A.MIGRATE_DISK, SRC, FAIL), task(A.FINISH, DEST, FAIL),
             task(A.CLEANUP_DEST, DEST, OK), task(A.RESTORE_SOURCE, SRC, OK)]
    v = after_gone_resize("r", SRC, tasks)
    assert (v.phase, v.power_state, v.release_lock) == (
        InstancePhase.ACTIVE, PowerState.RUNNING, True)


@pytest.mark.parametrize("tasks", [
    # powered off (or maybe), nothing restored
    [task(A.MIGRATE_DISK, SRC, RUN)],
    [task(A.MIGRATE_DISK, SRC, FAIL)],
    # restored on the source, but the started copy on the destination was never removed
    [task(A.MIGRATE_DISK, SRC, OK), task(A.FINISH, DEST, OK), task(A.RESTORE_SOURCE, SRC, OK)],
    # the destination cleanup still runs
    [task(A.MIGRATE_DISK, SRC, OK), task(A.FINISH, DEST, OK), task(A.CLEANUP_DEST, DEST, RUN),
     task(A.RESTORE_SOURCE, SRC, OK)],
    # a restore on another host than the one the status names
    [task(A.MIGRATE_DISK, SRC, OK), task(A.RESTORE_SOURCE, "hv-3", OK)],
    # confirming: the source copy may be deleted already
    [task(A.MIGRATE_DISK, SRC, OK), task(A.FINISH, DEST, OK), task(A.CONFIRM, SRC, RUN)],
    [task(A.MIGRATE_DISK, SRC, OK), task(A.CLEANUP_DEST, DEST, OK),
     task(A.RESTORE_SOURCE, SRC, OK), task(A.CONFIRM, SRC, FAIL)],
])
def test_any_other_trace_is_an_error_that_keeps_the_lock(tasks: list[HostTask]) -> None:
    v = after_gone_resize("r", SRC, tasks)
    assert (v.phase, v.power_state, v.release_lock) == (
        InstancePhase.ERROR, PowerState.UNKNOWN, False)
