"""Abandoning a dead destination (issue 18, finding 6): the rules, then one engine step.

Finishing, Reverting and RollingBack wait on the destination's agent; when that host never
comes back, an admin's ``spec.abandonDestination`` fences the copy there (recorded on its
Host before anything else), starts the VM on its source and ends the resize.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from tests.support.engine_world import NS, T0, build_world
from tests.support.memstore import MemStorage

from vmresize.api import naming
from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import HostTask, HostTaskSpec, TaskPhase
from vmresize.api.hosttask import TaskAction as A
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import ResizePhase as P
from vmresize.api.resize import VMResizeStatus
from vmresize.operator.decisions.lifecycle import (
    CreateTask,
    FenceOrphan,
    Kind,
    Observation,
    ReleaseDestClaim,
    State,
    UpdateInstance,
    step,
)
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORPHAN = OrphanCopy(host="dst", owner="ns/r", owner_uid="u", domain_name="ns.vm",
                    disk_path="instances/ns/vm/u/disk.qcow2", disk_dir="instances/ns/vm/u",
                    abandoned_at=NOW)


def state(phase: P, action: A, **kw: object) -> State:
    base = State(phase=phase, source_host="src", dest_host="dst", attempts=1,
                 current_action=action, task_retries=3)
    return replace(base, **kw)  # type: ignore[arg-type]


ABANDON = Observation(Kind.ABANDON, orphan=ORPHAN)


@pytest.mark.parametrize(("phase", "action", "then"), [
    (P.FINISHING, A.FINISH, P.ROLLING_BACK),
    (P.REVERTING, A.CLEANUP_DEST, P.REVERTING),
    (P.ROLLING_BACK, A.CLEANUP_DEST, P.ROLLING_BACK),
])
def test_abandon_fences_then_restores_the_source(phase: P, action: A, then: P) -> None:
    out = step(state(phase, action), ABANDON, NOW)
    assert out.phase is then
    assert out.actions == (FenceOrphan("dst"), CreateTask(A.RESTORE_SOURCE, "src", 0)), \
        "the fence is recorded with the decision, ahead of the source's restart"
    assert out.reason == "DestinationAbandoned"
    assert out.updates["abandoned_destination"] == ORPHAN
    assert "instances/ns/vm/u" in (out.message or "")
    if phase is P.FINISHING:
        assert out.updates["rollback_from"] == "Finishing"


@pytest.mark.parametrize(("phase", "end"), [(P.ROLLING_BACK, P.ROLLED_BACK),
                                            (P.REVERTING, P.REVERTED)])
@pytest.mark.parametrize("source_first", [False, True])
def test_restore_source_is_the_last_step_after_an_abandonment(
        phase: P, end: P, source_first: bool) -> None:
    """No CleanupDest after it: nothing would ever answer it on the dead host."""
    s = state(phase, A.RESTORE_SOURCE, abandoned=True, restore_source_first=source_first)
    out = step(s, Observation(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is end
    assert out.reason == "DestinationAbandoned"
    assert not any(isinstance(a, CreateTask) for a in out.actions)
    assert out.actions[0] == ReleaseDestClaim()
    upd = out.actions[1]
    assert isinstance(upd, UpdateInstance)
    assert (upd.placement, upd.phase, upd.power, upd.unlock) == (
        "source", InstancePhase.ACTIVE, PowerState.RUNNING, True)


def test_without_the_abandonment_a_source_first_rollback_still_cleans_the_dest() -> None:
    s = state(P.ROLLING_BACK, A.RESTORE_SOURCE, restore_source_first=True)
    out = step(s, Observation(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.actions[0] == CreateTask(A.CLEANUP_DEST, "dst", 0)


def test_source_already_runs_ends_at_once() -> None:
    """A rollback from Migrating restarted the source first; only CleanupDest was left."""
    s = state(P.ROLLING_BACK, A.CLEANUP_DEST, restore_source_first=True)
    out = step(s, ABANDON, NOW)
    assert out.phase is P.ROLLED_BACK
    assert out.actions[0] == FenceOrphan("dst")
    assert ReleaseDestClaim() in out.actions
    assert out.updates["abandoned_destination"] == ORPHAN


def test_restore_source_under_way_is_left_to_finish() -> None:
    s = state(P.REVERTING, A.RESTORE_SOURCE)
    out = step(s, ABANDON, NOW)
    assert out.phase is P.REVERTING
    assert out.actions == (FenceOrphan("dst"),)
    assert out.updates["abandoned_destination"] == ORPHAN


def test_same_host_cannot_be_abandoned() -> None:
    s = state(P.FINISHING, A.FINISH, dest_host="src")
    out = step(s, Observation(Kind.ABANDON, orphan=replace_host(ORPHAN, "src")), NOW)
    assert out.phase is P.FINISHING
    assert not out.actions
    assert out.reason == "AbandonRefused"
    assert not out.updates


def replace_host(o: OrphanCopy, host: str) -> OrphanCopy:
    return o.model_copy(update={"host": host})


@pytest.mark.parametrize("phase", [P.VERIFY_RESIZE, P.CONFIRMING, P.MIGRATING, P.PREPARING])
def test_other_phases_ignore_it(phase: P) -> None:
    out = step(state(phase, A.FINISH), ABANDON, NOW)
    assert out.phase is phase
    assert not out.actions


# ------------------------------------------------------------------- one engine step

S = Settings(namespace="sys")


def test_engine_fences_on_the_dest_host_before_it_creates_restore_source() -> None:
    s = build_world(MemStorage(), new_flavor="medium", status=VMResizeStatus(
        phase=P.FINISHING, source_host="h1", dest_host="h2", old_flavor="small",
        new_flavor="medium", dest_domain_name="tenant.vm",
        dest_disk_path="instances/tenant/vm/UID/disk.qcow2"))
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    finish = naming.task_name(r.uid, A.FINISH, 0)
    s.patch("vmresizes", NS, "r", lambda b: (b["spec"].update(abandonDestination=True),
                                             b["status"].update(currentTask=finish)))
    s.put(HostTask(metadata={"name": finish, "namespace": "sys"}, spec=HostTaskSpec(
        host="h2", action=A.FINISH, owner=f"{NS}/r", owner_uid=r.uid, instance=f"{NS}/vm")))
    order: list[str] = []
    s.before_write = lambda what, key: order.append(f"{what} {key[0]}")
    engine.reconcile(s, S, NS, "r", T0)
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.abandoned_destination is not None
    assert r.status.abandoned_destination.domain_name == "tenant.vm"
    assert r.status.abandoned_destination.disk_dir == "instances/tenant/vm/UID"
    h2 = s.host("h2")
    assert h2 is not None
    assert h2.status is not None
    assert h2.status.orphans[r.uid].domain_name == "tenant.vm"
    assert r.status.current_task == naming.task_name(r.uid, A.RESTORE_SOURCE, 0)
    fenced = order.index("status hosts")
    created = order.index("create hosttasks")
    assert fenced < created, order
    # The source runs again: the resize ends, DestinationAbandoned, without the dest.
    task = s.task("sys", r.status.current_task)
    assert task is not None
    s.patch("hosttasks", "sys", task.name,
            lambda b: b.update(status={"phase": TaskPhase.SUCCEEDED.value}))
    engine.reconcile(s, S, NS, "r", T0)
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is P.ROLLED_BACK
    assert r.status.reason == "DestinationAbandoned"
    assert {t.spec.action for t in s.tasks()} == {A.FINISH, A.RESTORE_SOURCE}
