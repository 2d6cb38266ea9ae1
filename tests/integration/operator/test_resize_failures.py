"""Failing agents: the operator retries, moves to an alternate host or rolls back.

Against a real API server with the real operator; the fake agents fail as scripted.
"""

from __future__ import annotations

from typing import Any

from tests.support.op_harness import Fulfiller, G, Operator, V, World, wait_for


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


def _tasks(agents: Fulfiller, action: str) -> list[dict[str, Any]]:
    return [t for t in agents.seen.values() if t["spec"]["action"] == action]


def test_prepare_failure_cleans_its_host_before_the_next_alternate(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    """Issue 18, finding 7c: a Prepare that failed on ``b`` may have accepted files there
    (their promises shrink b's space check for good); the operator asks b's agent for a
    CleanupDest of this move, naming its transfer and files, and only once that ended does
    it prepare the next alternate."""
    world.make_host("a")
    world.make_host("b", memory_mib=32768 + 512)   # best by free RAM: chosen first
    world.make_host("c")
    agents.script.fail[("Prepare", world.host("b"))] = "cannot accept disk.qcow2: refused"
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "VerifyResize")
    assert st["destHost"] == world.host("c")
    cleanups = _tasks(agents, "CleanupDest")
    assert [t["spec"]["host"] for t in cleanups] == [world.host("b")], agents.actions()
    uid = world.co.get_namespaced_custom_object(G, V, world.ns, "vmresizes", "r1")[
        "metadata"]["uid"]
    assert cleanups[0]["spec"]["transferId"] == uid   # what b's agent forgets
    assert cleanups[0]["spec"]["diskPath"] == st["destDiskPath"]
    done = world.co.get_namespaced_custom_object_status(
        G, V, world.ns, "hosttasks", cleanups[0]["metadata"]["name"])["status"]
    (on_c,) = [t for t in _tasks(agents, "Prepare") if t["spec"]["host"] == world.host("c")]
    assert done["finishedAt"] <= on_c["metadata"]["creationTimestamp"], "cleaned, then c"
    assert world.allocations("b") == {}
    assert "prepareFailure" not in st
    assert world.events_once("r1", "cleaned")


def test_a_failed_cleanup_of_a_given_up_host_does_not_hold_the_resize(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    """The cleanup is best effort: it failing (or stalling) still moves on, and says so."""
    world.make_host("a")
    world.make_host("b", memory_mib=32768 + 512)
    world.make_host("c")
    agents.script.fail[("Prepare", world.host("b"))] = "no space left on device"
    agents.script.fail[("CleanupDest", world.host("b"))] = "input/output error"
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    st = world.wait_phase("r1", "VerifyResize")
    assert st["destHost"] == world.host("c")
    assert world.allocations("b") == {}
    assert world.events_once("r1", "not cleaned (input/output error")


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
    # the end still says what failed, in the agent's words (kept through the API server)
    assert "connection reset by peer" in st["rollbackMessage"]
    assert "connection reset by peer" in st["message"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["RolledBack"] == "True"
    inst = world.status("instances", "vm1")
    assert inst["host"] == before["host"]
    assert inst["phase"] == "Active"
    assert inst["powerState"] == "Running"
    assert world.allocations("b") == {}
    acts = agents.actions()
    # From Migrating the source runs again first (no domain exists on the destination,
    # which may be the agent that failed), then the destination is cleaned up.
    assert acts.index(f"RestoreSource@{world.host('a')}") < acts.index(
        f"CleanupDest@{world.host('b')}")


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
    assert "currentTask" not in st, "a finished resize names no task: agents refuse old ones"
    uid = world.get("vmresizes", "r1")["metadata"]["uid"]
    assert {f"{uid}-confirm-0", f"{uid}-confirm-1"} <= set(agents.seen)
    assert any("device busy" in e for e in world.events_once("r1", "device busy"))
    assert world.allocations("a") == {}


def test_spawn_failure_is_an_error_and_releases_the_claim(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    agents.script.fail[("Spawn", None)] = "base image not found"
    world.instance("vm1", "small", wait=False)
    st = wait_for("error", lambda: (s := world.status("instances", "vm1")).get(
        "phase") == "Error" and s)
    assert "base image not found" in st["message"]
    assert world.allocations("a") == {}
