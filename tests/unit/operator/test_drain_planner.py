"""Issue 21, part 1: the drain planner (pure): which instance moves next, how each move's
VMResize reads in the drain, the counts, the phases, cancel, and a restart mid-drain
(the plan rebuilt from the API's objects alone)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vmresize.api.drain import DrainPhase, DrainSpec, HostDrain, ItemState
from vmresize.api.host import Host, HostSpec, HostStatus
from vmresize.api.instance import Instance, InstancePhase, InstanceSpec, InstanceStatus
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec, VMResizeStatus
from vmresize.operator.decisions.drain import (
    HEALTH_CHECK_ANNOTATION,
    Plan,
    disabled_reason,
    plan,
    resize_name,
)

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HV = "hv-1"
UID = "0123456789abcdef"


def drain(max_parallel: int = 2, cancel: bool = False, status: Any = None) -> HostDrain:
    return HostDrain(metadata={"name": "d1", "uid": UID, "generation": 1},
                     spec=DrainSpec(host=HV, max_parallel=max_parallel, cancel=cancel),
                     status=status)


def host(enabled: bool = False, d: HostDrain | None = None) -> Host:
    reason = disabled_reason(d or drain())
    return Host(metadata={"name": HV}, spec=HostSpec(enabled=enabled, disabled_reason=reason))


def inst(name: str, on: str = HV, phase: InstancePhase = InstancePhase.ACTIVE,
         ns: str = "ns", locked: str | None = None, **annotations: str) -> Instance:
    return Instance(metadata={"name": name, "namespace": ns, "uid": f"uid-{name}",
                              "annotations": annotations},
                    spec=InstanceSpec(flavor="small"),
                    status=InstanceStatus(phase=phase, host=on, active_resize_uid=locked,
                                          active_resize=locked))


def resize(of: str, phase: ResizePhase, ns: str = "ns", reason: str = "",
           message: str = "", dest: str | None = "hv-2") -> VMResize:
    return VMResize(metadata={"name": resize_name(UID, of), "namespace": ns},
                    spec=VMResizeSpec(instance_name=of),
                    status=VMResizeStatus(phase=phase, reason=reason, message=message,
                                          dest_host=dest))


def run(d: HostDrain, instances: list[Instance], resizes: list[VMResize] = (),  # type: ignore[assignment]
        now: datetime = T0, h: Host | None = None) -> Plan:
    return plan(d, h or host(), instances, list(resizes), now)


def step(d: HostDrain, p: Plan) -> HostDrain:
    """The drain as the next pass reads it: the status the last pass wrote."""
    return d.model_copy(update={"status": p.status})


FIVE = [inst(f"vm{i}") for i in range(1, 6)]


def test_the_first_pass_disables_the_host_and_moves_nothing_yet() -> None:
    p = run(drain(), FIVE, h=host(enabled=True))
    assert p.disable_host == "drained by HostDrain d1"
    assert p.creates == []
    assert p.status.phase is DrainPhase.PENDING
    assert (p.status.counts.total, p.status.counts.waiting) == (5, 5)


def test_it_moves_max_parallel_at_a_time_in_a_stable_order() -> None:
    p = run(drain(max_parallel=2), [*list(reversed(FIVE)), inst("elsewhere", on="hv-9")])
    assert [c.spec["instanceName"] for c in p.creates] == ["vm1", "vm2"]
    assert p.creates[0].name == "drain-01234567-vm1"
    assert p.creates[0].spec["autoConfirm"] == {"afterSeconds": 1}
    c = p.status.counts
    assert (c.total, c.moving, c.waiting, c.moved, c.failed) == (5, 2, 3, 0, 0)
    assert p.status.phase is DrainPhase.DRAINING
    assert p.disable_host is None
    # The moves are recorded before they are created: the status names them.
    assert [i.resize for i in p.status.instances if i.state is ItemState.MOVING] == \
        ["drain-01234567-vm1", "drain-01234567-vm2"]
    assert ("Normal", "MoveStarted", "ns/vm1: VMResize drain-01234567-vm1") in p.events


def test_a_recorded_move_whose_resize_is_missing_is_created_again_and_no_other_starts() -> None:
    """A crash between the status write and the create: the next pass creates the same
    VMResizes again (same names) and starts no third move."""
    d = step(drain(), run(drain(), FIVE))
    p = run(d, FIVE)
    assert [c.name for c in p.creates] == ["drain-01234567-vm1", "drain-01234567-vm2"]
    assert p.status.counts.moving == 2


def test_max_parallel_is_never_exceeded_over_a_whole_drain() -> None:
    d, now, resizes = drain(max_parallel=2), T0, {}
    for _ in range(30):
        p = run(d, FIVE, list(resizes.values()), now)
        assert p.status.counts.moving <= 2
        for c in p.creates:
            resizes.setdefault(c.spec["instanceName"], resize(c.spec["instanceName"],
                                                               ResizePhase.MIGRATING))
        d = step(d, p)
        # one running move ends per pass
        running = [k for k, r in resizes.items()
                   if r.status and r.status.phase is ResizePhase.MIGRATING]
        if running:
            resizes[running[0]] = resize(running[0], ResizePhase.CONFIRMED)
        now += timedelta(seconds=10)
        if p.done:
            break
    assert d.status is not None
    assert d.status.phase is DrainPhase.DRAINED
    assert d.status.counts.moved == 5
    assert d.status.progress == "5/5"
    assert d.status.percent == 100
    assert {c.type: c.status for c in d.status.conditions} == \
        {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


def test_each_way_a_move_can_end_without_moving_is_a_failure_with_its_reason() -> None:
    d = step(drain(max_parallel=5), run(drain(max_parallel=5), FIVE[:4]))
    p = run(d, FIVE[:4], [
        resize("vm1", ResizePhase.FAILED, reason="NoValidHost",
               message="no host passed the filters: RamFilter removed 2"),
        resize("vm2", ResizePhase.ROLLED_BACK, reason="RolledBack", message="copy failed"),
        resize("vm3", ResizePhase.REVERTED, reason="HealthCheckFailed"),
        resize("vm4", ResizePhase.CONFIRMED)], now=T0 + timedelta(minutes=1))
    by = {i.name: i for i in p.status.instances}
    assert (by["vm1"].state, by["vm1"].reason) == (ItemState.FAILED, "NoValidHost")
    assert "RamFilter" in by["vm1"].message
    assert (by["vm2"].state, by["vm2"].reason) == (ItemState.FAILED, "RolledBack")
    assert (by["vm3"].state, by["vm3"].reason) == (ItemState.FAILED, "Reverted")
    assert (by["vm4"].state, by["vm4"].dest_host) == (ItemState.MOVED, "hv-2")
    assert p.status.phase is DrainPhase.INCOMPLETE
    assert (p.status.counts.failed, p.status.counts.moved) == (3, 1)
    assert {c.type: c.status for c in p.status.conditions}["Stalled"] == "True"
    assert ("Warning", "InstanceFailed",
            "ns/vm1 failed: NoValidHost no host passed the filters: RamFilter removed 2") \
        in p.events
    assert ("Normal", "InstanceMoved", "ns/vm4 moved to hv-2") in p.events


def test_an_instance_in_error_is_unmovable_and_one_held_by_another_resize_waits() -> None:
    broken = inst("broken", phase=InstancePhase.ERROR)
    busy = inst("busy", phase=InstancePhase.RESIZING, locked="someone")
    p = run(drain(max_parallel=4), [broken, busy])
    by = {i.name: i for i in p.status.instances}
    assert (by["broken"].state, by["broken"].reason) == (ItemState.FAILED, "Unmovable")
    assert (by["busy"].state, by["busy"].reason) == (ItemState.WAITING, "Busy")
    assert p.creates == []
    # The other resize moved it away: it counts as moved, and the drain is over.
    gone = inst("busy", on="hv-3")
    p2 = run(step(drain(max_parallel=4), p), [broken, gone])
    assert {i.name: i.state for i in p2.status.instances}["busy"] is ItemState.MOVED
    assert p2.status.phase is DrainPhase.INCOMPLETE


def test_a_declared_health_check_gates_the_auto_confirm() -> None:
    check = {"tcp": {"host": "10.0.0.5", "port": 22}}
    vm = inst("web", **{HEALTH_CHECK_ANNOTATION: json.dumps(check)})
    bad = inst("bad", **{HEALTH_CHECK_ANNOTATION: '{"tcp": {"port": 22}}'})
    p = run(drain(max_parallel=4), [vm, bad])
    assert [c.spec for c in p.creates] == [{"instanceName": "web",
                                            "autoConfirm": {"check": check}}]
    by = {i.name: i for i in p.status.instances}
    assert (by["bad"].state, by["bad"].reason) == (ItemState.FAILED, "Unmovable")
    assert HEALTH_CHECK_ANNOTATION in by["bad"].message


def test_cancel_starts_nothing_new_and_waits_for_the_moves_under_way() -> None:
    d = step(drain(), run(drain(), FIVE))
    cancelled = d.model_copy(update={"spec": d.spec.model_copy(update={"cancel": True})})
    running = [resize("vm1", ResizePhase.MIGRATING), resize("vm2", ResizePhase.CONFIRMED)]
    p = run(cancelled, FIVE, running)
    assert p.creates == []
    assert p.status.phase is DrainPhase.CANCELLING
    assert (p.status.counts.moving, p.status.counts.moved, p.status.counts.waiting) == (1, 1, 3)
    p = run(step(cancelled, p), FIVE, [resize("vm1", ResizePhase.CONFIRMED), running[1]])
    assert p.status.phase is DrainPhase.CANCELLED
    assert p.done
    assert {c.type: c.status for c in p.status.conditions}["Ready"] == "True"


def test_a_restart_resumes_from_the_objects_alone() -> None:
    """A new operator has nothing but the drain's status and the objects: the same pass
    gives the same plan, and the moves already made are not made again."""
    d = step(drain(), run(drain(), FIVE))
    made = [resize("vm1", ResizePhase.CONFIRMED), resize("vm2", ResizePhase.FINISHING)]
    a = run(d, FIVE, made, now=T0 + timedelta(seconds=30))
    b = run(d, FIVE, made, now=T0 + timedelta(seconds=30))
    assert a == b
    assert [c.spec["instanceName"] for c in a.creates] == ["vm3"]


def test_eta_from_the_mean_move_and_the_rounds_left() -> None:
    d = step(drain(max_parallel=2), run(drain(max_parallel=2), FIVE))
    p = run(d, FIVE, [resize("vm1", ResizePhase.CONFIRMED), resize("vm2", ResizePhase.CONFIRMED)],
            now=T0 + timedelta(seconds=60))
    # 2 moves of 60 s; 3 left at 2 at a time: 2 rounds, 120 s after now.
    assert p.status.eta == T0 + timedelta(seconds=180)


def test_a_deleted_instance_leaves_the_drain() -> None:
    d = step(drain(max_parallel=1), run(drain(max_parallel=1), FIVE[:2]))
    p = run(d, FIVE[1:2], [resize("vm1", ResizePhase.CONFIRMED)])
    assert p.status.counts.total == 2
    p = run(d, [], [])
    assert [i.name for i in p.status.instances] == ["vm1"]     # moving: kept
    assert any(e[1] == "InstanceGone" for e in p.events)


def test_a_missing_host_fails_the_drain() -> None:
    p = plan(drain(), None, FIVE, [], T0)
    assert (p.status.phase, p.status.reason) == (DrainPhase.FAILED, "HostNotFound")
    assert p.done


@pytest.mark.parametrize("instance", ["vm", "x" * 63])
def test_resize_names_are_dns_labels(instance: str) -> None:
    name = resize_name(UID, instance)
    assert len(name) <= 63
    assert name.startswith("drain-01234567-")


def test_a_pass_that_sees_nothing_new_writes_nothing() -> None:
    """The status depends on the objects, not on the clock: a later pass over the same
    objects gives the same status, so the daemon does not write (and loop) for nothing."""
    d = step(drain(), run(drain(), FIVE))
    made = [resize("vm1", ResizePhase.CONFIRMED), resize("vm2", ResizePhase.MIGRATING)]
    first = run(d, FIVE, made, now=T0 + timedelta(seconds=40))
    d = step(d, first)
    made.append(resize("vm3", ResizePhase.PREPARING))
    d = step(d, run(d, FIVE, made, now=T0 + timedelta(seconds=50)))
    later = run(d, FIVE, made, now=T0 + timedelta(seconds=95))
    assert later.status == d.status
    assert later.creates == []
    assert later.events == []


def test_a_silent_agent_on_the_drained_host_starts_no_move_and_the_drain_says_why() -> None:
    """The heartbeat watchdog marked the drained host not ready while vm1 and vm2 roll
    back (their copies stalled): a slot is free once one of them ends, yet no move starts
    from the silent host; the waiting ones say why, and Stalled says so, once (one Event).
    The agent back (ready), the next move starts and Stalled clears."""
    silent = host().model_copy(update={"status": HostStatus(ready=False)})
    d = step(drain(), run(drain(), FIVE))
    rolling = [resize("vm1", ResizePhase.ROLLING_BACK, message="MigrateDisk stalled"),
               resize("vm2", ResizePhase.ROLLED_BACK, message="MigrateDisk stalled")]
    p = run(d, FIVE, rolling, h=silent)
    assert p.creates == []
    st = p.status
    assert st.phase is DrainPhase.DRAINING
    c = st.counts
    assert (c.moving, c.failed, c.waiting) == (1, 1, 3)
    waiting = [i for i in st.instances if i.state is ItemState.WAITING]
    assert {i.reason for i in waiting} == {"HostNotReady"}
    assert all(HV in i.message for i in waiting)
    stalled = {x.type: x for x in st.conditions}["Stalled"]
    assert (stalled.status, stalled.reason) == ("True", "HostNotReady")
    assert [e for e in p.events if e[1] == "HostNotReady"] == [
        ("Warning", "HostNotReady", waiting[0].message)]
    again = run(step(d, p), FIVE, rolling, h=silent)
    assert again.creates == []
    assert [e for e in again.events if e[1] == "HostNotReady"] == []

    back = host().model_copy(update={"status": HostStatus(ready=True)})
    p = run(step(d, again), FIVE, rolling, h=back)
    assert [x.spec["instanceName"] for x in p.creates] == ["vm3"]
    assert {x.type: x.status for x in p.status.conditions}["Stalled"] == "False"
    assert all(not i.reason for i in p.status.instances if i.state is ItemState.WAITING)
