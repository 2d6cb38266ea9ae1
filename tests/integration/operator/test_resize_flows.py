"""The VMResize lifecycle against a real API server, the real operator and fake agents.

The paths that succeed or are refused up front: spawn, resize, confirm and revert, host
selection, auto-confirm, adoption. Failures are in test_resize_failures, deletions in
test_resize_deletion.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.op_harness import Fulfiller, Operator, World, wait_for

from vmresize.api.meta import API_VERSION, GROUP, VERSION


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
    # Claims and the lock are keyed by full UIDs (a namesake is another holder).
    ruid = world.get("vmresizes", "r1")["metadata"]["uid"]
    assert world.status("instances", "vm1")["activeResizeUid"] == ruid
    assert f"VMResize/{ruid}" in world.raw_allocations("b")

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
    reasons = " ".join(world.events_once("r1", "Confirmed"))
    for phase in ("Scheduling", "Preparing", "Migrating", "Finishing", "VerifyResize",
                  "Confirmed"):
        assert phase in reasons, reasons


def test_revert_brings_back_the_source_unchanged(world: World, agents: Fulfiller,
                                                 operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    before = world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "VerifyResize")
    world.patch_resize("r1", {"revert": True})
    st = world.wait_phase("r1", "Reverted")
    assert st["reason"] == "Reverted"
    after = world.status("instances", "vm1")
    for k in ("host", "flavor", "vcpus", "memoryMiB", "diskGiB", "domainName", "diskPath"):
        assert after[k] == before[k], k
    assert after["phase"] == "Active"
    assert "activeResize" not in after
    assert world.allocations("b") == {}
    assert list(world.allocations("a")) == [f"Instance/{world.ns}/vm1"]
    acts = agents.actions()
    assert f"CleanupDest@{world.host('b')}" in acts
    assert f"RestoreSource@{world.host('a')}" in acts
    assert not any(a.startswith("Confirm@") for a in acts), "revert never deletes the source"


def test_cold_migration_excludes_the_current_host(world: World, agents: Fulfiller,
                                                  operator: Operator) -> None:
    # "a" is the emptiest host (best by free RAM), yet a migration must leave it.
    world.make_host("a", memory_mib=65536 + 512)
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1")   # no flavor: cold migration
    st = world.wait_phase("r1", "VerifyResize")
    assert st["destHost"] == world.host("b")
    assert st["newFlavor"] == world.flavor("small")
    world.patch_resize("r1", {"confirm": True})
    world.wait_phase("r1", "Confirmed")
    inst = world.status("instances", "vm1")
    assert inst["host"] == world.host("b")
    assert inst["flavor"] == world.flavor("small")


def test_same_host_refused_by_default(world: World, agents: Fulfiller,
                                      operator: Operator) -> None:
    world.make_host("a")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "Failed")
    assert st["reason"] == "NoValidHost"
    assert st["filterCounts"]["SameHost"] == 1
    inst = world.status("instances", "vm1")
    assert "activeResize" not in inst
    assert inst["phase"] == "Active"
    assert list(world.allocations("a")) == [f"Instance/{world.ns}/vm1"]


def test_same_host_allowed_keeps_the_source_until_confirm(
        world: World, agents: Fulfiller, operator_factory: Any) -> None:
    operator_factory(VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST="true")
    world.make_host("a")
    before = world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "VerifyResize")
    assert st["destHost"] == world.host("a")
    assert st["destDomainName"] != before["domainName"]
    assert st["destDiskPath"] != before["diskPath"]
    assert set(world.allocations("a")) == {f"Instance/{world.ns}/vm1", f"VMResize/{world.ns}/r1"}
    assert not any(a.startswith("Confirm@") for a in agents.actions())
    world.patch_resize("r1", {"confirm": True})
    world.wait_phase("r1", "Confirmed")
    alloc = world.allocations("a")
    assert list(alloc) == [f"Instance/{world.ns}/vm1"]
    assert alloc[f"Instance/{world.ns}/vm1"]["resources"]["vcpus"] == 2
    inst = world.status("instances", "vm1")
    assert inst["domainName"] == st["destDomainName"]
    assert inst["diskPath"] == st["destDiskPath"]


def test_auto_confirm_per_resize(world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.instance("vm2", "small", host="a")
    world.resize("r1", "vm1", "medium", autoConfirmSeconds=2)
    world.resize("r2", "vm2", "medium", autoConfirmSeconds=0)
    st = world.wait_phase("r1", "VerifyResize", "Confirming", "Confirmed")
    st = world.wait_phase("r1", "Confirmed", timeout=30)
    assert st["reason"] == "Confirmed"
    assert "AutoConfirmed" in " ".join(world.events_once("r1", "AutoConfirmed"))
    st2 = world.wait_phase("r2", "VerifyResize")
    assert "verifyDeadline" not in st2
    assert world.status("vmresizes", "r2")["phase"] == "VerifyResize", "0 means never"


def test_cluster_auto_confirm_default(world: World, agents: Fulfiller,
                                      operator_factory: Any) -> None:
    operator_factory(VMRESIZE_AUTO_CONFIRM_SECONDS="1")
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "Confirmed", timeout=30)


def test_no_valid_host_reports_per_filter_counts(world: World, agents: Fulfiller,
                                                 operator: Operator) -> None:
    world.make_host("a")
    world.make_host("small", vcpus=8, memory_mib=1024 + 512)
    world.make_host("off", enabled=False)
    world.make_host("stale", fresh=False)
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "large")
    st = world.wait_phase("r1", "Failed")
    assert st["reason"] == "NoValidHost"
    counts = st["filterCounts"]
    assert counts["SameHost"] == 1
    assert counts["RAM"] == 1
    assert counts["Enabled"] == 1
    assert counts["Heartbeat"] == 1
    assert "RAM: 1" in st["message"]
    assert any("NoValidHost" in e for e in world.events_once("r1", "NoValidHost"))
    assert "activeResize" not in world.status("instances", "vm1")


def test_second_resize_of_a_busy_instance_is_rejected(world: World, agents: Fulfiller,
                                                      operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.make_host("c")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "VerifyResize")
    allocs = {h: world.allocations(h) for h in "abc"}
    world.resize("r2", "vm1", "large")
    st = world.wait_phase("r2", "Failed")
    assert st["reason"] == "InstanceBusy"
    assert "r1" in st["message"]
    assert {h: world.allocations(h) for h in "abc"} == allocs, "nothing touched"
    assert world.status("vmresizes", "r1")["phase"] == "VerifyResize"
    assert world.status("instances", "vm1")["activeResize"] == "r1"


@pytest.mark.parametrize(("old", "new", "reason"), [("small", "tiny-disk", "DiskShrink"),
                                                  ("eph-2", "eph-1", "EphemeralShrink")])
def test_disk_shrink_is_refused(world: World, agents: Fulfiller, operator: Operator,
                                old: str, new: str, reason: str) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", old, host="a")
    actions = agents.actions()
    world.resize("r1", "vm1", new)
    st = world.wait_phase("r1", "Failed")
    assert st["reason"] == reason
    assert "never shrinks" in st["message"]
    assert agents.actions() == actions, "no step on any host: the VM is untouched"
    assert "activeResize" not in world.status("instances", "vm1")
    assert world.allocations("b") == {}


def test_resize_applied_with_its_instance_waits_for_it(world: World, agents: Fulfiller,
                                                       operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    agents.script.hold.add(("Spawn", None))
    world.instance("vm1", "small", host="a", wait=False)
    world.resize("r1", "vm1", "medium")
    wait_for("spawn started", lambda: any(a.startswith("Spawn") for a in agents.actions()))
    assert world.status("vmresizes", "r1").get("phase", "Pending") == "Pending"
    agents.release("Spawn")
    world.wait_phase("r1", "VerifyResize")


def test_adopt_an_existing_domain(world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.co.create_namespaced_custom_object(GROUP, VERSION, world.ns, "instances", {
        "apiVersion": API_VERSION, "kind": "Instance", "metadata": {"name": "old"},
        "spec": {"flavor": world.flavor("small"), "host": world.host("a"),
                 "adopt": {"domainName": "legacy-web"}}})
    st = wait_for("adopted", lambda: (s := world.status("instances", "old")).get(
        "phase") == "Active" and s)
    assert st["domainName"] == "legacy-web"
    assert st["diskPath"] == "instances/adopted/legacy-web/disk.qcow2"
    assert f"Adopt@{world.host('a')}" in agents.actions()
    assert f"Instance/{world.ns}/old" in world.allocations("a")
