"""Deleting a VMResize or an Instance: rollback first, then its HostTasks and claims go.

Against a real API server with the real operator and fake agents.
"""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException
from tests.support.op_harness import Fulfiller, Operator, World, wait_for

from vmresize.api import naming
from vmresize.api.meta import GROUP, VERSION


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
