"""Single engine steps over the in-memory storage: the cases of issue 9, one by one.

Each starts from a resize in a given phase, makes one thing happen between or around
the engine's writes, and checks what the API (here: :class:`MemStorage`) holds after.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import kopf
import pytest
from tests.support.engine_world import NS, T0, build_world
from tests.support.memstore import MemStorage

from vmresize.api import naming
from vmresize.api.hosttask import HostTask, HostTaskSpec, TaskAction
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec, VMResizeStatus
from vmresize.operator.errors import ApiConflictError, ForeignTaskError
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

SYS = "sys"
S = Settings(namespace=SYS)


def _world(phase: ResizePhase, **status: Any) -> MemStorage:
    return build_world(MemStorage(), new_flavor="medium", status=VMResizeStatus(
        phase=phase, source_host="h1", dest_host="h2", old_flavor="small",
        new_flavor="medium", **status))


def _actions(s: MemStorage) -> set[TaskAction]:
    return {t.spec.action for t in s.tasks()}


def test_revert_racing_auto_confirm_never_runs_both() -> None:
    """Issue 9, item 1: the auto-confirm deadline passes, the user's revert lands between
    the step's read and its write (so the status write is a 409), the next step reverts.
    Before: Confirm was created before the 409, then CleanupDest: both copies deleted."""
    s = _world(ResizePhase.VERIFY_RESIZE, verify_deadline=T0)
    done = []

    def revert_first(what: str, key: Any) -> None:
        if not done:
            done.append(what)
            s.patch("vmresizes", NS, "r", lambda b: b["spec"].update(revert=True))

    s.before_write = revert_first
    with pytest.raises(kopf.TemporaryError):
        engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    s.before_write = lambda what, key: None
    assert _actions(s) == set(), "nothing may be created before the decision is recorded"
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=2))
    assert _actions(s) == {TaskAction.CLEANUP_DEST}
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is ResizePhase.REVERTING
    assert r.status.current_task == naming.task_name(r.uid, TaskAction.CLEANUP_DEST, 0)


def test_a_task_exists_only_once_the_status_names_it() -> None:
    """Crash right after the status write: the task named there is created by the next
    step, and no other."""
    s = _world(ResizePhase.VERIFY_RESIZE)
    s.patch("vmresizes", NS, "r", lambda b: b["spec"].update(confirm=True))

    def crash_after_first(what: str, key: Any) -> None:
        if s.writes:
            raise RuntimeError("operator killed")

    s.before_write = crash_after_first
    with pytest.raises(RuntimeError):
        engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))
    s.before_write = lambda what, key: None
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is ResizePhase.CONFIRMING
    assert _actions(s) == set()
    s.patch("vmresizes", NS, "r", lambda b: b["spec"].update(revert=True))   # too late
    engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=2))
    assert [t.name for t in s.tasks()] == [r.status.current_task]
    assert _actions(s) == {TaskAction.CONFIRM}


def test_a_task_of_the_same_name_but_another_owner_is_refused() -> None:
    """Issue 9, item 2: AlreadyExists is success only for our own task."""
    s = _world(ResizePhase.VERIFY_RESIZE)
    s.patch("vmresizes", NS, "r", lambda b: b["spec"].update(confirm=True))
    r = s.resize(NS, "r")
    assert r is not None
    name = naming.task_name(r.uid, TaskAction.CONFIRM, 0)
    s.put(HostTask(metadata={"name": name, "namespace": SYS}, spec=HostTaskSpec(
        host="h1", action=TaskAction.CONFIRM, owner="other/r", owner_uid="someone-else",
        instance="other/vm")))
    with pytest.raises(ForeignTaskError):
        engine.reconcile(s, S, NS, "r", T0 + timedelta(seconds=1))


def test_the_flavor_snapshot_is_used_after_pending() -> None:
    """Issue 9, item 4: the target Flavor is deleted (or edited) after the resize left
    Pending; the Finish task and the instance get the sizes of the snapshot."""
    s = MemStorage()
    src = _world(ResizePhase.PENDING)
    s.objects = src.objects
    s.remove("vmresizes", NS, "r")
    s.put(VMResize(metadata={"name": "r", "namespace": NS},
                   spec=VMResizeSpec(instance_name="vm", flavor="medium")))
    engine.reconcile(s, S, NS, "r", T0)                       # Pending -> Scheduling
    s.patch("flavors", "", "medium", lambda b: b["spec"].update(vcpus=7, memoryMiB=7168))
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.new_flavor_spec is not None
    assert r.status.new_flavor_spec.vcpus == 2
    for _ in range(4):                                         # lock, choose, claim, Prepare
        engine.reconcile(s, S, NS, "r", T0)
    s.remove("flavors", "", "medium")
    h2 = s.host("h2")
    assert h2 is not None
    assert h2.status is not None
    assert [a.resources.memory_mib for a in h2.status.allocations.values()] == [2048]
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is ResizePhase.PREPARING
    # Let Prepare and MigrateDisk succeed, then look at Finish.
    for action in (TaskAction.PREPARE, TaskAction.MIGRATE_DISK):
        name = naming.task_name(r.uid, action, 0)
        s.patch("hosttasks", SYS, name, lambda b: b.update(status={
            "phase": "Succeeded", "result": {"checksum": "ab" * 32}}))
        engine.reconcile(s, S, NS, "r", T0)
    fin = s.task(SYS, naming.task_name(r.uid, TaskAction.FINISH, 0))
    assert fin is not None
    assert fin.spec.flavor is not None
    assert (fin.spec.flavor.vcpus, fin.spec.flavor.memory_mib) == (2, 2048)


def test_deleted_while_scheduling_releases_lock_and_claim() -> None:
    """Issue 9, item 7: a delete that arrives while the claim is being made."""
    s = _world(ResizePhase.PENDING)
    s.remove("vmresizes", NS, "r")
    s.put(VMResize(metadata={"name": "r", "namespace": NS},
                   spec=VMResizeSpec(instance_name="vm", flavor="medium")))
    writes: list[tuple[str, Any]] = []

    def stop_before_preparing(what: str, key: Any) -> None:
        writes.append((what, key))
        if len(writes) == 5:   # Scheduling (and lock), chosen (and claim), then Preparing
            raise RuntimeError("the operator dies after the claim")

    s.before_write = stop_before_preparing
    with pytest.raises(RuntimeError):
        engine.reconcile(s, S, NS, "r", T0)
    s.before_write = lambda what, key: None
    assert [k[0] for _, k in writes] == ["vmresizes", "instances", "vmresizes", "hosts",
                                         "vmresizes"]
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is ResizePhase.SCHEDULING
    assert r.status.dest_host is not None
    s.mark_deleted("vmresizes", NS, "r")
    out = engine.reconcile(s, S, NS, "r", T0)
    assert out.done
    inst = s.instance(NS, "vm")
    assert inst is not None
    assert inst.status is not None
    assert inst.status.active_resize_uid is None
    assert all(not (h.status and any(k.startswith("VMResize/") for k in h.status.allocations))
               for h in s.hosts())


def test_apply_to_preparing_writes_each_decision_once() -> None:
    """Carrying out the lock and the claim costs no status write of its own: the next
    decision's write clears them. Three status writes (each before what it names), the
    lock, the claim and the Prepare task."""
    s = _world(ResizePhase.PENDING)
    s.remove("vmresizes", NS, "r")
    s.put(VMResize(metadata={"name": "r", "namespace": NS},
                   spec=VMResizeSpec(instance_name="vm", flavor="medium")))
    s.writes.clear()
    out = engine.reconcile(s, S, NS, "r", T0)
    assert out.phase is ResizePhase.PREPARING
    assert [(w, k[0]) for w, k in s.writes] == [
        ("status", "vmresizes"), ("status", "instances"),   # Scheduling, then the lock
        ("status", "vmresizes"), ("status", "hosts"),       # dest chosen, then the claim
        ("status", "vmresizes"), ("create", "hosttasks")]   # Preparing, then Prepare
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.pending == []
    assert [t for t, _, _ in out.events] == ["Normal"] * 3


def test_a_409_on_a_folded_write_keeps_the_steps_before() -> None:
    """The user's patch lands before the write that would clear the lock: the Scheduling
    step stands (its event too), and the next step carries the lock out again and goes on."""
    s = _world(ResizePhase.PENDING)
    s.remove("vmresizes", NS, "r")
    s.put(VMResize(metadata={"name": "r", "namespace": NS},
                   spec=VMResizeSpec(instance_name="vm", flavor="medium")))
    count = [0]

    def conflict_on_third(what: str, key: Any) -> None:
        count[0] += 1
        if count[0] == 3:   # Scheduling, the lock, then the write that chooses a host
            raise ApiConflictError("injected 409")

    s.before_write = conflict_on_third
    out = engine.reconcile(s, S, NS, "r", T0)
    s.before_write = lambda what, key: None
    assert (out.phase, out.changed, len(out.events)) == (ResizePhase.SCHEDULING, True, 1)
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert [e.kind for e in r.status.pending] == ["LockInstance"]   # done, not yet cleared
    out = engine.reconcile(s, S, NS, "r", T0)
    assert out.phase is ResizePhase.PREPARING
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.pending == []
    inst = s.instance(NS, "vm")
    assert inst is not None
    assert inst.status is not None
    assert inst.status.active_resize_uid == r.uid


def test_an_instance_being_deleted_is_never_locked() -> None:
    s = _world(ResizePhase.PENDING)
    s.mark_deleted("instances", NS, "vm")
    for _ in range(3):
        engine.reconcile(s, S, NS, "r", T0)
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is ResizePhase.FAILED
    assert r.status.reason == "InstanceDeleting"
    inst = s.instance(NS, "vm")
    assert inst is not None
    assert inst.status is not None
    assert inst.status.active_resize_uid is None
