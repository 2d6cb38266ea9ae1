"""``spec.cancel`` (issue 21, part 3): the resize rolls back and ends Cancelled, its story
kept. Against a real API server with the real operator; the fake agents hold a step so the
cancel lands while it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.operator.test_plugin import run
from tests.support.op_harness import Fulfiller, Operator, World


@pytest.mark.parametrize(("held", "phase"), [("Prepare", "Preparing"),
                                             ("MigrateDisk", "Migrating"),
                                             ("Finish", "Finishing")])
def test_a_cancelled_resize_rolls_back_and_ends_cancelled(
        world: World, agents: Fulfiller, operator: Operator, held: str, phase: str) -> None:
    world.make_host("a")
    world.make_host("b")
    before = world.instance("vm1", "small", host="a")
    agents.script.hold.add((held, None))
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", phase)
    world.patch_resize("r1", {"cancel": True})
    st = world.wait_phase("r1", "Cancelled")
    assert (st["reason"], st["rollbackReason"], st["rollbackFrom"]) == (
        "Cancelled", "Cancelled", phase)
    assert f"Cancelled in {phase}" in st["message"]
    # The whole story is kept: every phase it went through, and the conditions of the end.
    assert {phase, "RollingBack", "Cancelled"} <= set(st["phaseTimestamps"])
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert (conds["Ready"], conds["Stalled"], conds["RolledBack"]) == ("True", "False", "False")
    assert world.events_once("r1", "Cancelled")
    inst = world.status("instances", "vm1")
    assert (inst["host"], inst["phase"], inst["powerState"]) == (
        before["host"], "Active", "Running")
    assert "activeResize" not in inst
    assert world.allocations("b") == {}
    acts = agents.actions()
    assert f"RestoreSource@{world.host('a')}" in acts
    assert f"CleanupDest@{world.host('b')}" in acts
    assert not any(a.startswith("Confirm@") for a in acts)
    if held != "Finish":
        assert not any(a.startswith("Finish@") for a in acts)


def test_a_resize_created_cancelled_ends_at_once_touching_nothing(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium", cancel=True)   # created cancelled: reads as Pending
    st = world.wait_phase("r1", "Cancelled")
    assert st["reason"] == "Cancelled"
    assert agents.actions() == [f"Spawn@{world.host('a')}"]   # the instance's own, only
    inst = world.status("instances", "vm1")
    assert (inst["phase"], inst["powerState"]) == ("Active", "Running")
    assert "activeResize" not in inst


def test_the_plugin_cancels_and_is_refused_from_verify_resize_on(
        kubeconfig: Path, world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.instance("vm2", "small", host="a")
    agents.script.hold.add(("MigrateDisk", "inst:vm1"))
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "Migrating")
    rc, out, err = run(kubeconfig, world.ns, "cancel", "r1", "--wait", "--timeout", "60s")
    assert rc == 0, out + err
    assert "spec.cancel=true (phase Migrating)" in out
    assert f"r1 cancelled: vm1 runs on {world.host('a')}, unchanged" in out
    world.resize("r2", "vm2", "medium")
    world.wait_phase("r2", "VerifyResize")
    rc, out, err = run(kubeconfig, world.ns, "cancel", "r2")
    assert rc == 5, out + err   # refused by the API server, its words printed
    assert "spec.cancel is accepted only before VerifyResize; it is VerifyResize: use " \
        "spec.revert" in err
