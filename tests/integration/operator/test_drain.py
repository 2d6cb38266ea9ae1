"""Issue 21, part 1: a HostDrain through the real API server, the real operator and the
fake agents (:class:`~tests.support.op_harness.Fulfiller`).

Five instances on host a, ``maxParallel: 2``; hosts b and c have room for the four small
ones only, so the large one cannot move (NoValidHost) and stays, running, on a. A sampler
reads the drain's VMResizes all along and checks that no more than two ever run at once;
the operator is killed (-9) in the middle and started again, and the drain resumes.
Also: cancel (the running move finishes, no new one starts), a move's end waking its
drain, and a move that fails after the power-off rolling back through the ordinary
rollback, followed with ``kubectl vmresize drain --wait``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.integration.operator.test_plugin import run as plugin
from tests.support.op_harness import Fulfiller, Operator, World, now_iso, wait_for

from vmresize.api.drain import DRAIN_LABEL
from vmresize.api.meta import API_VERSION, GROUP, VERSION

_ENDED = {"Confirmed", "Reverted", "RolledBack", "RollbackFailed", "Failed"}


class Sampler:
    """Counts, every 50 ms, the drain's VMResizes that have not ended; keeps the highest."""

    def __init__(self, co: client.CustomObjectsApi, ns: str, drain: str) -> None:
        self.co, self.ns, self.drain = co, ns, drain
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(ApiException):
                items = self.co.list_namespaced_custom_object(
                    GROUP, VERSION, self.ns, "vmresizes",
                    label_selector=f"{DRAIN_LABEL}={self.drain}")["items"]
                running = [i for i in items
                           if (i.get("status") or {}).get("phase") not in _ENDED]
                self.most = max(self.most, len(running))
                self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def drains(world: World) -> Iterator[list[str]]:
    """Names of the HostDrains the test made; deleted afterwards (they are cluster-wide)."""
    made: list[str] = []
    yield made
    for name in made:
        with contextlib.suppress(ApiException):
            world.co.delete_cluster_custom_object(GROUP, VERSION, "hostdrains", name)


def _drain(world: World, drains: list[str], host: str, parallel: int) -> str:
    name = f"{world.ns}-drain"
    world.co.create_cluster_custom_object(GROUP, VERSION, "hostdrains", {
        "apiVersion": API_VERSION, "kind": "HostDrain", "metadata": {"name": name},
        "spec": {"host": world.host(host), "maxParallel": parallel,
                 "reason": "kernel upgrade"}})
    drains.append(name)
    return name


def _status(world: World, name: str) -> dict[str, Any]:
    return dict(world.co.get_cluster_custom_object(GROUP, VERSION, "hostdrains", name)
                .get("status") or {})


def test_drain_five_at_two_with_one_unmovable_and_an_operator_restart(
        world: World, agents: Fulfiller, operator: Operator, drains: list[str]) -> None:
    world.make_host("a")
    # b and c: room for three small ones each (3 GiB usable), never for the large one (4 GiB).
    world.make_host("b", memory_mib=3072 + 512)
    world.make_host("c", memory_mib=3072 + 512)
    for i in range(1, 5):
        world.instance(f"vm{i}", "small", host="a")
    world.instance("big", "large", host="a")
    agents.script.delay = 1.5     # each step takes a while: moves overlap
    name = _drain(world, drains, "a", parallel=2)

    with Sampler(world.co, world.ns, name) as sampler:
        wait_for("two moves done", lambda: _status(world, name).get("counts", {})
                 .get("moved", 0) >= 2, timeout=120)
        mid = _status(world, name)
        assert mid["phase"] == "Draining"
        assert mid["counts"]["moving"] <= 2
        operator.kill9()
        operator.start()
        st = wait_for("the drain ends", lambda: (s := _status(world, name)).get("phase") in
                      ("Drained", "Incomplete", "Cancelled", "Failed") and s, timeout=180)
    assert sampler.samples > 20
    assert 1 <= sampler.most <= 2, f"{sampler.most} moves ran at once"

    assert st["phase"] == "Incomplete"
    c = st["counts"]
    assert (c["total"], c["moved"], c["moving"], c["waiting"], c["failed"]) == (5, 4, 0, 0, 1)
    assert st["progress"] == "5/5"
    failed = [i for i in st["instances"] if i["state"] == "Failed"]
    assert [(i["name"], i["reason"]) for i in failed] == [("big", "NoValidHost")]
    conds = {x["type"]: x["status"] for x in st["conditions"]}
    assert conds == {"Ready": "False", "Reconciling": "False", "Stalled": "True"}

    host_a = world.get("hosts", world.host("a"))["spec"]
    assert host_a["enabled"] is False
    assert host_a["disabledReason"] == f"drained by HostDrain {name}: kernel upgrade"
    # Every VM runs somewhere, once: the small ones moved, the large one stayed.
    for i in range(1, 5):
        s = world.status("instances", f"vm{i}")
        assert s["host"] in (world.host("b"), world.host("c"))
        assert (s["phase"], s["powerState"]) == ("Active", "Running")
    big = world.status("instances", "big")
    assert (big["host"], big["phase"], big["powerState"]) == (world.host("a"), "Active",
                                                               "Running")
    assert list(world.allocations("a")) == [f"Instance/{world.ns}/big"]
    assert len(world.allocations("b")) + len(world.allocations("c")) == 4
    # Each move was an ordinary VMResize in the instance's namespace, confirmed on its own.
    rs = world.co.list_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes",
                                                label_selector=f"{DRAIN_LABEL}={name}")
    phases = sorted((r["spec"]["instanceName"], r["status"]["phase"]) for r in rs["items"])
    assert phases == [("big", "Failed"), *((f"vm{i}", "Confirmed") for i in range(1, 5))]
    evs = world.core.list_event_for_all_namespaces(
        field_selector=f"involvedObject.name={name}").items
    reasons = {e.reason for e in evs}
    assert {"MoveStarted", "InstanceMoved", "InstanceFailed", "Incomplete"} <= reasons


def test_cancel_stops_new_moves_and_lets_the_running_ones_finish(
        world: World, agents: Fulfiller, operator: Operator, drains: list[str]) -> None:
    world.make_host("a")
    world.make_host("b")
    for i in range(1, 4):
        world.instance(f"vm{i}", "small", host="a")
    agents.script.hold.add(("MigrateDisk", None))     # the first move waits in Migrating
    name = _drain(world, drains, "a", parallel=1)
    wait_for("one move running", lambda: _status(world, name).get("counts", {})
             .get("moving") == 1, timeout=60)
    world.co.patch_cluster_custom_object(GROUP, VERSION, "hostdrains", name,
                                         {"spec": {"cancel": True}})
    wait_for("cancelling", lambda: _status(world, name).get("phase") == "Cancelling",
             timeout=30)
    agents.release("MigrateDisk")
    st = wait_for("cancelled", lambda: (s := _status(world, name)).get("phase") ==
                  "Cancelled" and s, timeout=60)
    c = st["counts"]
    assert (c["moved"], c["moving"], c["waiting"], c["failed"]) == (1, 0, 2, 0)
    rs = world.co.list_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes",
                                                label_selector=f"{DRAIN_LABEL}={name}")
    assert [r["status"]["phase"] for r in rs["items"]] == ["Confirmed"]
    assert {x["type"]: x["status"] for x in st["conditions"]}["Ready"] == "True"


def test_a_move_that_ends_wakes_its_drain(world: World, agents: Fulfiller,
                                           operator_factory: Any, drains: list[str]) -> None:
    """With the drain's own look every 30 s, two moves one after the other still end
    within 25 s: the first one's end wakes the drain, which starts the second at once."""
    operator_factory(VMRESIZE_POLL_SECONDS="30")
    world.make_host("a")
    world.make_host("b")
    for i in range(1, 3):
        world.instance(f"vm{i}", "small", host="a")
    name = _drain(world, drains, "a", parallel=1)
    st = wait_for("drained", lambda: (s := _status(world, name)).get("phase") == "Drained"
                  and s, timeout=25)
    assert st["counts"]["moved"] == 2


def test_a_cancel_wakes_its_drain(world: World, agents: Fulfiller, operator_factory: Any,
                                  drains: list[str]) -> None:
    """With the drain's own look every 30 s, a cancel is seen within 10 s (the spec
    change wakes it)."""
    operator_factory(VMRESIZE_POLL_SECONDS="30")
    world.make_host("a")
    world.make_host("b")
    for i in range(1, 3):
        world.instance(f"vm{i}", "small", host="a")
    agents.script.hold.add(("MigrateDisk", None))
    name = _drain(world, drains, "a", parallel=1)
    # The move is held in Migrating; the drain, which saw nothing change since, sleeps.
    wait_for("the move held in Migrating", lambda: [
        (r.get("status") or {}).get("phase") for r in world.co.list_namespaced_custom_object(
            GROUP, VERSION, world.ns, "vmresizes", label_selector=f"{DRAIN_LABEL}={name}",
        )["items"]] == ["Migrating"], timeout=30)
    time.sleep(2)
    world.co.patch_cluster_custom_object(GROUP, VERSION, "hostdrains", name,
                                         {"spec": {"cancel": True}})
    wait_for("cancelling", lambda: _status(world, name).get("phase") == "Cancelling",
             timeout=10)
    agents.release("MigrateDisk")


def test_a_move_that_fails_past_the_power_off_rolls_back_and_the_vm_runs_once_on_the_source(
        world: World, agents: Fulfiller, operator: Operator, drains: list[str],
        kubeconfig: Path) -> None:
    """The drained host fails vm2's copy (MigrateDisk, after the power-off): the ordinary
    rollback starts it again on the drained host; the drain counts it RolledBack, the other
    one moved, and the plugin's --wait ends with the drain's verdict (exit 3) naming it."""
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.instance("vm2", "small", host="a")
    agents.script.fail[("MigrateDisk", "inst:vm2")] = "disk read error on the source"
    agents.script.non_retryable = True
    rc, out, _ = plugin(kubeconfig, world.ns, "drain", world.host("a"), "--max-parallel",
                        "2", "--name", f"{world.ns}-drain", "--wait", "--timeout", "90s")
    drains.append(f"{world.ns}-drain")
    assert rc == 3, out
    assert "Incomplete 2/2: moved 1, moving 0, waiting 0, failed 1" in out
    assert f"{world.ns}/vm2: RolledBack" in out
    st = _status(world, f"{world.ns}-drain")
    failed = {i["name"]: i for i in st["instances"] if i["state"] == "Failed"}
    assert list(failed) == ["vm2"]
    assert failed["vm2"]["reason"] == "RolledBack"
    assert "disk read error" in failed["vm2"]["message"]
    vm2 = world.status("instances", "vm2")
    assert (vm2["host"], vm2["phase"], vm2["powerState"]) == (world.host("a"), "Active",
                                                               "Running")
    assert world.status("instances", "vm1")["host"] == world.host("b")
    # One copy each: vm2 is claimed on a only, vm1 on b only.
    assert list(world.allocations("a")) == [f"Instance/{world.ns}/vm2"]
    assert list(world.allocations("b")) == [f"Instance/{world.ns}/vm1"]


def _moves(world: World, name: str) -> dict[str, dict[str, Any]]:
    """The drain's VMResizes by instance: their status."""
    rs = world.co.list_namespaced_custom_object(GROUP, VERSION, world.ns, "vmresizes",
                                                label_selector=f"{DRAIN_LABEL}={name}")
    return {r["spec"]["instanceName"]: dict(r.get("status") or {}) for r in rs["items"]}


def test_the_drained_hosts_agent_falls_silent_with_two_moves_in_flight_and_one_waiting(
        world: World, agents: Fulfiller, operator_factory: Any, drains: list[str]) -> None:
    """Host a's agent freezes (no heartbeat, no task served) while two moves sit in their
    disk copy (``maxParallel: 2``) and a third waits. The step watchdog stalls both copies
    and rolls them back, and the rollback (power-on on a) waits for a's agent; the waiting
    one is not started while a is not ready, and the drain says why. Then a's agent comes
    back: both roll back to a (one copy each, running), the waiting one moves, and the
    drain ends Incomplete with each rollback's reason."""
    operator_factory(VMRESIZE_STEP_STALE_SECONDS="10", VMRESIZE_HEARTBEAT_STALE_SECONDS="10")
    world.make_host("a")
    world.make_host("b")
    for i in range(1, 4):
        world.instance(f"vm{i}", "small", host="a")
    a = world.host("a")
    agents.script.hold.add(("MigrateDisk", None))
    name = _drain(world, drains, "a", parallel=2)
    wait_for("two copies in flight", lambda: sorted(
        (k, s.get("phase")) for k, s in _moves(world, name).items()) ==
        [("vm1", "Migrating"), ("vm2", "Migrating")], timeout=60)
    agents.script.silent.add(a)          # a's agent freezes, its copies stand still
    agents.release("MigrateDisk")

    wait_for("host a marked not ready", lambda: world.status("hosts", a).get("ready")
             is False, timeout=60)
    wait_for("both moves rolling back, stalled on a", lambda: all(
        s.get("phase") == "RollingBack" for s in _moves(world, name).values()), timeout=60)
    st = wait_for("the drain says why vm3 waits", lambda: (s := _status(world, name)) and
                  {i["name"]: i for i in s["instances"]}["vm3"].get("reason") and s,
                  timeout=30)
    items = {i["name"]: i for i in st["instances"]}
    assert st["phase"] == "Draining"
    assert (items["vm1"]["state"], items["vm2"]["state"]) == ("Moving", "Moving")
    for vm in ("vm1", "vm2"):     # the rollback's story is in the drain
        assert items[vm]["resizePhase"] == "RollingBack"
        assert "stalled" in items[vm]["message"], items[vm]
    assert items["vm3"]["state"] == "Waiting"
    assert items["vm3"]["reason"] == "HostNotReady"
    assert a in items["vm3"]["message"]
    conds = {x["type"]: x for x in st["conditions"]}
    assert conds["Stalled"]["status"] == "True"
    assert conds["Stalled"]["reason"] == "HostNotReady"
    time.sleep(3)
    assert set(_moves(world, name)) == {"vm1", "vm2"}, "no move starts from a silent host"
    # While a is silent no VM runs twice: each is claimed on a alone (the rollback holds
    # the source's claim; b's claims were given back or never made twice).
    for vm in ("vm1", "vm2", "vm3"):
        assert world.status("instances", vm)["host"] == a

    agents.script.silent.discard(a)      # the agent comes back (as after SIGCONT)
    world.co.patch_cluster_custom_object_status(GROUP, VERSION, "hosts", a, {
        "status": {"ready": True, "heartbeat": now_iso()}})
    st = wait_for("the drain ends", lambda: (s := _status(world, name)).get("phase") in
                  ("Drained", "Incomplete", "Cancelled", "Failed") and s, timeout=120)
    assert st["phase"] == "Incomplete"
    c = st["counts"]
    assert (c["total"], c["moved"], c["moving"], c["waiting"], c["failed"]) == (3, 1, 0, 0, 2)
    items = {i["name"]: i for i in st["instances"]}
    for vm in ("vm1", "vm2"):
        assert (items[vm]["state"], items[vm]["reason"]) == ("Failed", "RolledBack")
        assert "stalled" in items[vm]["message"], items[vm]
    assert (items["vm3"]["state"], items["vm3"]["reason"]) == ("Moved", "")
    conds = {x["type"]: x for x in st["conditions"]}
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "Incomplete")
    assert {k: s["phase"] for k, s in _moves(world, name).items()} == {
        "vm1": "RolledBack", "vm2": "RolledBack", "vm3": "Confirmed"}
    # Every VM runs somewhere, once: recorded on one host, claimed there alone.
    for vm, on in (("vm1", "a"), ("vm2", "a"), ("vm3", "b")):
        s = world.status("instances", vm)
        assert (s["host"], s["phase"], s["powerState"]) == (world.host(on), "Active",
                                                             "Running")
    assert sorted(world.allocations("a")) == [f"Instance/{world.ns}/vm1",
                                              f"Instance/{world.ns}/vm2"]
    assert list(world.allocations("b")) == [f"Instance/{world.ns}/vm3"]


def test_a_drain_of_a_host_that_does_not_exist_is_an_error_and_creates_nothing(
        world: World, kubeconfig: Path) -> None:
    """A typo in HOST: the plugin says so and exits non-zero; no HostDrain is left to fail
    later (and nothing is disabled)."""
    host = f"{world.ns}-no-such-host"
    rc, out, err = plugin(kubeconfig, world.ns, "drain", host, "--max-parallel", "2")
    assert rc == 5, out + err    # Exit.REFUSED: the API server's "not found", as it is
    assert f'"{host}" not found' in err, err
    drains = world.co.list_cluster_custom_object(GROUP, VERSION, "hostdrains")["items"]
    assert [d["metadata"]["name"] for d in drains if d["spec"]["host"] == host] == []
