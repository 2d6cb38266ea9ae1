"""kill -9 of the operator in the middle of each phase: the resize completes after restart."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from tests.support.op_harness import Fulfiller, Operator, World, wait_for

#: phase to kill in -> (task held so the resize stays there, what to do after the restart)
HELD = {
    "Preparing": "Prepare",
    "Migrating": "MigrateDisk",
    "Finishing": "Finish",
    "Confirming": "Confirm",
}


def _claims_consistent(world: World, inst: str, host: str) -> None:
    """Exactly one claim is left, the instance's, on its host: nothing leaked."""
    for h in world.hosts:
        alloc = world.allocations(h)
        want = [f"Instance/{world.ns}/{inst}"] if h == host else []
        assert list(alloc) == want, (h, alloc)


@pytest.mark.parametrize("phase", list(HELD))
def test_kill_in_task_phase(phase: str, world: World, agents: Fulfiller,
                            operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    action = HELD[phase]
    agents.script.hold.add((action, None))
    world.resize("r1", "vm1", "medium", autoConfirmSeconds=1 if phase == "Confirming" else 0)
    world.wait_phase("r1", phase, timeout=60)
    operator.kill9()
    agents.release(action)   # the agent finishes while the operator is dead
    time.sleep(0.5)
    operator.start()
    if phase != "Confirming":
        world.wait_phase("r1", "VerifyResize", timeout=60)
        world.patch_resize("r1", {"confirm": True})
    st = world.wait_phase("r1", "Confirmed", timeout=60)
    assert st["destHost"] == world.host("b")
    _claims_consistent(world, "vm1", world.host("b"))
    assert world.status("instances", "vm1")["host"] == world.host("b")
    # One task per step: the restarted operator found the tasks it had made (the timer's
    # auto-confirm first asks the destination whether the VM runs there: HealthCheck).
    looked = ["HealthCheck"] if phase == "Confirming" else []
    assert sorted(a.split("@")[0] for a in agents.actions()) == sorted(
        ["Spawn", "Prepare", "MigrateDisk", "Finish", "Confirm", *looked])


def test_kill_in_verify_resize_then_revert_while_down(world: World, agents: Fulfiller,
                                                      operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "VerifyResize")
    operator.kill9()
    world.patch_resize("r1", {"revert": True})
    operator.start()
    world.wait_phase("r1", "Reverted", timeout=60)
    _claims_consistent(world, "vm1", world.host("a"))


@pytest.mark.parametrize("phase", ["Reverting", "RollingBack"])
def test_kill_while_going_back(phase: str, world: World, agents: Fulfiller,
                               operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    agents.script.hold.add(("RestoreSource", None))
    if phase == "RollingBack":
        agents.script.fail[("Finish", None)] = "boom"
    world.resize("r1", "vm1", "medium")
    if phase == "Reverting":
        world.wait_phase("r1", "VerifyResize")
        world.patch_resize("r1", {"revert": True})
    world.wait_phase("r1", phase)
    wait_for("RestoreSource created", lambda: any(
        a.startswith("RestoreSource") for a in agents.actions()), timeout=30)
    operator.kill9()
    agents.release("RestoreSource")
    operator.start()
    world.wait_phase("r1", "Reverted" if phase == "Reverting" else "RolledBack", timeout=60)
    _claims_consistent(world, "vm1", world.host("a"))


def test_kill_before_pending_is_seen(world: World, agents: Fulfiller,
                                     operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    operator.kill9()
    world.resize("r1", "vm1", "medium")
    operator.start()
    world.wait_phase("r1", "VerifyResize", timeout=60)


def test_chaos_kill_at_random_moments(world: World, agents: Fulfiller,
                                      operator: Operator) -> None:
    """Kill -9 every 0.5-3 s (landing in Pending, Scheduling, mid-claim, mid-step...)
    until the resize is confirmed; then no claim may have leaked."""
    rnd = random.Random(7)
    world.make_host("a")
    world.make_host("b")
    world.make_host("c")
    world.instance("vm1", "small", host="a")
    agents.script.delay = 1.5
    world.resize("r1", "vm1", "large")
    seen: list[str] = []
    deadline = time.monotonic() + 150
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rnd.uniform(0.5, 3.0))
        st: dict[str, Any] = world.status("vmresizes", "r1")
        seen.append(st.get("phase", "Pending"))
        if st.get("phase") == "VerifyResize":
            world.patch_resize("r1", {"confirm": True})
        if st.get("phase") == "Confirmed":
            break
        operator.kill9()
        kills += 1
        operator.start()
    st = world.wait_phase("r1", "Confirmed", timeout=60)
    print(f"kills={kills} phases seen={seen}")
    assert kills >= 3, seen
    assert {"Migrating", "Finishing"} & set(seen), seen
    dest = st["destHost"]
    _claims_consistent(world, "vm1", dest)
    inst = world.status("instances", "vm1")
    assert inst["host"] == dest
    assert inst["vcpus"] == 4
