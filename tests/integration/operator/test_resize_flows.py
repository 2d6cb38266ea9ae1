"""The VMResize lifecycle against a real API server, the real operator and fake agents."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException
from op_harness import Fulfiller, Operator, World, wait_for


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


def test_prepare_failure_moves_to_an_alternate(world: World, agents: Fulfiller,
                                               operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b", memory_mib=32768 + 512)   # best by free RAM: chosen first
    world.make_host("c")
    agents.script.fail[("Prepare", world.host("b"))] = "no space left on device"
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "VerifyResize")
    assert st["destHost"] == world.host("c")
    assert st["attempts"] == 2
    assert world.allocations("b") == {}, "the failed destination's claim is released"
    assert f"VMResize/{world.ns}/r1" in world.allocations("c")
    assert any("no space left" in e for e in world.events_once("r1", "no space left"))


def test_prepare_failing_everywhere_rolls_back_after_max_attempts(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    for h in "abcde":
        world.make_host(h)
    agents.script.fail[("Prepare", None)] = "broken"
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "RolledBack")
    assert st["attempts"] == 3
    assert st["reason"] == "RolledBack"
    prepares = [a for a in agents.actions() if a.startswith("Prepare@")]
    assert len(prepares) == 3
    for h in "bcde":
        assert world.allocations(h) == {}


def test_failure_mid_migration_rolls_back(world: World, agents: Fulfiller,
                                          operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    before = world.instance("vm1", "small", host="a")
    agents.script.fail[("MigrateDisk", None)] = "connection reset by peer"
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "RolledBack")
    assert st["rollbackFrom"] == "Migrating"
    assert "runs on" in st["message"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["RolledBack"] == "True"
    inst = world.status("instances", "vm1")
    assert inst["host"] == before["host"]
    assert inst["phase"] == "Active"
    assert inst["powerState"] == "Running"
    assert world.allocations("b") == {}
    acts = agents.actions()
    assert acts.index(f"CleanupDest@{world.host('b')}") < acts.index(
        f"RestoreSource@{world.host('a')}")


def test_failed_rollback_keeps_both_copies(world: World, agents: Fulfiller,
                                           operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    agents.script.fail[("Finish", None)] = "qemu died"
    agents.script.fail[("RestoreSource", None)] = "source disk unreadable"
    agents.script.non_retryable = True
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "RollbackFailed")
    assert "An admin must" in st["message"]
    assert f"VMResize/{world.ns}/r1" in world.allocations("b"), "dest copy kept, still claimed"
    assert f"Instance/{world.ns}/vm1" in world.allocations("a")
    inst = world.status("instances", "vm1")
    assert inst["phase"] == "Error"
    assert inst["activeResize"] == "r1"
    assert not any(a.startswith("Confirm@") for a in agents.actions())


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


def test_disk_shrink_is_refused(world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "tiny-disk")
    st = world.wait_phase("r1", "Failed")
    assert st["reason"] == "DiskShrink"
    assert "never shrinks" in st["message"]
    assert "activeResize" not in world.status("instances", "vm1")
    assert world.allocations("b") == {}


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
    world.co.delete_namespaced_custom_object("vmresize.io", "v1alpha1", world.ns, "vmresizes",
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
    world.co.delete_namespaced_custom_object("vmresize.io", "v1alpha1", world.ns, "instances",
                                             "vm1")
    wait_for("the instance to be gone", lambda: not _exists(world, "vm1", "instances"))
    assert _tasks_of(world, uid) == []
    assert f"Destroy@{world.host('a')}" in agents.actions()
    assert world.allocations("a") == {}


def _tasks_of(world: World, owner_uid: str) -> list[str]:
    """Names of the HostTasks (in the operator's namespace) that belong to one owner."""
    body = world.co.list_namespaced_custom_object(
        "vmresize.io", "v1alpha1", world.ns, "hosttasks",
        label_selector=f"vmresize.io/owner-uid={owner_uid}")
    return [t["metadata"]["name"] for t in body["items"]]


def _exists(world: World, name: str, plural: str = "vmresizes") -> bool:
    try:
        world.get(plural, name)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


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


def test_confirm_failure_is_retried(world: World, agents: Fulfiller,
                                    operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    agents.script.fail[("Confirm", None)] = "device busy"
    agents.script.once.add(("Confirm", None))
    world.resize("r1", "vm1", "medium")   # confirm is accepted only in VerifyResize
    world.wait_phase("r1", "VerifyResize")
    world.patch_resize("r1", {"confirm": True})
    st = world.wait_phase("r1", "Confirmed")
    assert st["currentTask"].endswith("-confirm-1")
    assert any("device busy" in e for e in world.events_once("r1", "device busy"))
    assert world.allocations("a") == {}


def test_deleting_in_verify_resize_reverts(world: World, agents: Fulfiller,
                                           operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    before = world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "VerifyResize")
    world.co.delete_namespaced_custom_object("vmresize.io", "v1alpha1", world.ns, "vmresizes",
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
    world.co.delete_namespaced_custom_object("vmresize.io", "v1alpha1", world.ns, "vmresizes",
                                             "r1")
    wait_for("the resize to be gone", lambda: not _exists(world, "r1"), timeout=60)
    assert "activeResize" not in world.status("instances", "vm1")
    assert world.allocations("b") == {}


def test_adopt_an_existing_domain(world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.co.create_namespaced_custom_object("vmresize.io", "v1alpha1", world.ns, "instances", {
        "apiVersion": "vmresize.io/v1alpha1", "kind": "Instance", "metadata": {"name": "old"},
        "spec": {"flavor": world.flavor("small"), "host": world.host("a"),
                 "adopt": {"domainName": "legacy-web"}}})
    st = wait_for("adopted", lambda: (s := world.status("instances", "old")).get(
        "phase") == "Active" and s)
    assert st["domainName"] == "legacy-web"
    assert st["diskPath"] == "instances/adopted/legacy-web/disk.qcow2"
    assert f"Adopt@{world.host('a')}" in agents.actions()
    assert f"Instance/{world.ns}/old" in world.allocations("a")


def test_spawn_failure_is_an_error_and_releases_the_claim(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    agents.script.fail[("Spawn", None)] = "base image not found"
    world.instance("vm1", "small", wait=False)
    st = wait_for("error", lambda: (s := world.status("instances", "vm1")).get(
        "phase") == "Error" and s)
    assert "base image not found" in st["message"]
    assert world.allocations("a") == {}
