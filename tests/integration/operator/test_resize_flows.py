"""The VMResize lifecycle against a real API server, the real operator and fake agents."""

from __future__ import annotations

from op_harness import Fulfiller, Operator, World


def test_instance_spawn_then_resize_and_confirm(world: World, agents: Fulfiller,
                                                operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b", memory_mib=8192 + 512)
    inst = world.instance("vm1", "small", host="a")
    assert inst["host"] == world.host("a")
    assert inst["vcpus"] == 1
    assert inst["domainName"] == f"{world.ns}.vm1"
    assert inst["powerState"] == "Running"
    assert f"Instance/{world.ns}/vm1" in world.allocations("a")

    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "VerifyResize")
    assert st["sourceHost"] == world.host("a")
    assert st["destHost"] == world.host("b")
    assert st["newFlavor"] == world.flavor("medium")
    assert st["sourceChecksum"] == "0" * 63 + "1"
    assert st["downtimeSeconds"] == 0.8
    assert st["destDiskPath"] != inst["diskPath"]
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["VerifyResize"] == "True"
    assert conds["Ready"] == "False"
    # Both copies are claimed while the user decides.
    assert f"Instance/{world.ns}/vm1" in world.allocations("a")
    assert f"VMResize/{world.ns}/r1" in world.allocations("b")
    assert world.status("instances", "vm1")["activeResize"] == "r1"

    world.patch_resize("r1", {"confirm": True})
    st = world.wait_phase("r1", "Confirmed")
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert world.allocations("a") == {}
    alloc = world.allocations("b")
    assert list(alloc) == [f"Instance/{world.ns}/vm1"]
    assert alloc[f"Instance/{world.ns}/vm1"]["resources"]["memoryMiB"] == 2048
    inst = world.status("instances", "vm1")
    assert inst["host"] == world.host("b")
    assert inst["flavor"] == world.flavor("medium")
    assert inst["vcpus"] == 2
    assert inst["phase"] == "Active"
    assert "activeResize" not in inst
    assert agents.actions().count(f"Confirm@{world.host('a')}") == 1
    reasons = " ".join(world.events("r1"))
    for phase in ("Scheduling", "Preparing", "Migrating", "Finishing", "VerifyResize",
                  "Confirmed"):
        assert phase in reasons, reasons
