"""Deleting a VMResize or an Instance: rollback first, then its HostTasks and claims go.

Against a real API server with the real operator and fake agents.
"""

from __future__ import annotations

import time

from kubernetes.client.exceptions import ApiException
from tests.support.op_harness import Fulfiller, Operator, World, wait_for

from vmresize.api import naming
from vmresize.api.meta import GROUP, VERSION
from vmresize.operator.handlers.host_health import SWEEP_SECONDS


def test_deleting_a_resize_mid_flight_rolls_it_back_first(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    before = world.instance("vm1", "small", host="a")
    agents.script.hold.add(("MigrateDisk", None))
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "Migrating")
    uid = world.get("vmresizes", "r1")["metadata"]["uid"]
    assert _tasks_of(world, uid)
    world.co.delete_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes",
                                             "r1")
    agents.release("MigrateDisk")
    wait_for("the resize to be gone", lambda: not _exists(world, "r1"), timeout=60)
    assert _tasks_of(world, uid) == []   # its steps go with it
    inst = world.status("instances", "vm1")
    assert inst["host"] == before["host"]
    assert inst["phase"] == "Active"
    assert "activeResize" not in inst
    assert world.allocations("b") == {}
    acts = agents.actions()
    assert f"RestoreSource@{world.host('a')}" in acts
    assert not any(a.startswith("Finish@") for a in acts)


def test_deleting_an_instance_destroys_it(world: World, agents: Fulfiller,
                                          operator: Operator) -> None:
    world.make_host("a")
    world.instance("vm1", "small")
    assert list(world.allocations("a")) == [f"Instance/{world.ns}/vm1"]
    uid = world.get("instances", "vm1")["metadata"]["uid"]
    world.co.delete_namespaced_custom_object(GROUP, VERSION, world.ns, "instances",
                                             "vm1")
    wait_for("the instance to be gone", lambda: not _exists(world, "vm1", "instances"))
    assert _tasks_of(world, uid) == []
    assert f"Destroy@{world.host('a')}" in agents.actions()
    assert world.allocations("a") == {}


def test_deleting_in_verify_resize_reverts(world: World, agents: Fulfiller,
                                           operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    before = world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "VerifyResize")
    world.co.delete_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes",
                                             "r1")
    wait_for("the resize to be gone", lambda: not _exists(world, "r1"), timeout=60)
    inst = world.status("instances", "vm1")
    assert inst["host"] == before["host"]
    assert "activeResize" not in inst
    assert world.allocations("b") == {}
    assert not any(a.startswith("Confirm@") for a in agents.actions())


def test_deleting_a_failed_rollback_releases_it(world: World, agents: Fulfiller,
                                                operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    agents.script.fail[("MigrateDisk", None)] = "sender died"
    agents.script.fail[("CleanupDest", None)] = "dest unreachable"
    agents.script.non_retryable = True
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "RollbackFailed")
    assert world.status("instances", "vm1")["activeResize"] == "r1"
    # The admin has cleaned up by hand; deleting the resize releases lock and dest claim.
    world.co.delete_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes",
                                             "r1")
    wait_for("the resize to be gone", lambda: not _exists(world, "r1"), timeout=60)
    assert "activeResize" not in world.status("instances", "vm1")
    assert world.allocations("b") == {}


def test_a_resize_whose_finalizer_is_removed_mid_revert_leaves_the_instance_in_error(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    """Issue 18, finding 3, with the admission policy bypassed (an admin removes the
    finalizer; no chart here): the VM runs on b (Finish done), the source is off and held
    on a, and the revert never ran. The lock sweep must not call the instance Active on
    a, nor may the claim sweep free b, where the newest copy runs."""
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    agents.script.hold.add(("CleanupDest", None))   # the revert's first step never ends
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "VerifyResize")
    uid = world.get("vmresizes", "r1")["metadata"]["uid"]
    world.co.delete_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes", "r1")
    wait_for("the revert to start", lambda: any(
        a.startswith("CleanupDest@") for a in agents.actions()), timeout=60)
    world.co.patch_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes", "r1",
                                            {"metadata": {"finalizers": None}})
    wait_for("the resize to be gone", lambda: not _exists(world, "r1"), timeout=30)
    # The sweep runs every 30 s (vmresize.operator.handlers.sweep.INTERVAL).
    inst = wait_for("the lock sweep to settle vm1", lambda: (
        s := world.status("instances", "vm1")).get("phase") != "Resizing" and s, timeout=75)
    assert inst["phase"] == "Error", inst
    assert inst["host"] == world.host("a")   # unchanged; and not called Active there
    assert inst["powerState"] == "Unknown"
    assert inst["activeResizeUid"] == uid    # no second resize while nobody knows
    assert "Finish on " + world.host("b") + " Succeeded" in inst["message"]
    assert any("ResizeRemovedUnfinished" in e for e in world.events_once("vm1", "removed"))
    # Both claims stay: b's is the newest copy's, which still runs there. The claim sweep
    # runs every SWEEP_SECONDS; watch b's claim through more than one round.
    deadline = time.monotonic() + SWEEP_SECONDS + 5
    while time.monotonic() < deadline:
        assert f"VMResize/{world.ns}/r1" in world.allocations("b")
        time.sleep(1)
    assert f"Instance/{world.ns}/vm1" in world.allocations("a")
    assert not any(a.startswith(("RestoreSource@", "Confirm@")) for a in agents.actions())


def _tasks_of(world: World, owner_uid: str) -> list[str]:
    """Names of the HostTasks (in the operator's namespace) that belong to one owner."""
    body = world.co.list_namespaced_custom_object(
        GROUP, VERSION, world.ns, "hosttasks",
        label_selector=f"{naming.OWNER_UID_LABEL}={owner_uid}")
    return [t["metadata"]["name"] for t in body["items"]]


def _exists(world: World, name: str, plural: str = "vmresizes") -> bool:
    try:
        world.get(plural, name)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True
