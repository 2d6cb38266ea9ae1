"""VMQuota (issue 21, part 2) through the real API server and the real operator: concurrent
creates and resizes in one namespace never take it past a limit, and a refusal names the
limit with the numbers (in the status and an Event)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.integration.operator.test_plugin import run
from tests.support.op_harness import Fulfiller, G, Operator, V, World, wait_for

from vmresize.api.meta import API_VERSION


def make_quota(world: World, **hard: int) -> None:
    world.co.create_namespaced_custom_object(G, V, world.ns, "vmquotas", {
        "apiVersion": API_VERSION, "kind": "VMQuota", "metadata": {"name": "q"},
        "spec": {"hard": hard}})


class Peak(threading.Thread):
    """The highest usage the VMQuota's status ever showed while it runs (polled)."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world, self.peak, self.stop = world, {"instances": 0, "vcpus": 0}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            used = self.world.status("vmquotas", "q").get("used") or {}
            for k in self.peak:
                self.peak[k] = max(self.peak[k], used.get(k, 0))
            self.stop.wait(0.05)

    def __enter__(self) -> Peak:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=5)


def _ended(world: World, plural: str, name: str, phases: tuple[str, ...]) -> dict[str, Any]:
    return dict(wait_for(f"{plural}/{name} in {phases}", lambda: (
        s := world.status(plural, name)).get("phase") in phases and not s.get("pending")
        and s, timeout=90))


def test_concurrent_creates_never_exceed_the_instance_limit(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    make_quota(world, instances=3, vcpus=10)
    names = [f"vm{i}" for i in range(7)]
    with Peak(world) as peak, ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: world.instance(n, "small", wait=False), names))
        ends = {n: _ended(world, "instances", n, ("Active", "Error")) for n in names}
    active = [n for n, s in ends.items() if s["phase"] == "Active"]
    refused = {n: s for n, s in ends.items() if s["phase"] == "Error"}
    assert len(active) == 3, ends
    assert peak.peak["instances"] <= 3, peak.peak
    for n, s in refused.items():
        assert "VMQuota q would be exceeded (instances: 3 used + 1 asked > 3 allowed)" \
            in s["message"], s
        ready = {c["type"]: c for c in s["conditions"]}["Ready"]
        assert ready["reason"] == "QuotaExceeded"
        assert "host" not in s   # refused before a host was chosen or claimed
        assert world.events_once(n, "QuotaExceeded")
    q = world.status("vmquotas", "q")
    assert (q["used"]["instances"], q["used"]["vcpus"]) == (3, 3)
    assert sorted(c["consumer"] for c in q["charges"].values()) == sorted(
        f"{world.ns}/{n}" for n in active)
    # Each host claim has its charge, and nothing else is charged.
    held = {k for h in ("a", "b") for k in world.raw_allocations(h)}
    assert held == set(q["charges"])


def test_concurrent_resizes_never_exceed_the_vcpu_limit(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    for h in "abc":
        world.make_host(h)
    make_quota(world, vcpus=6)
    vms = [f"vm{i}" for i in range(4)]
    for n in vms:
        world.instance(n, "small", host="a")   # 4 vCPUs used
    with Peak(world) as peak:
        with ThreadPoolExecutor(len(vms)) as pool:   # each asks +2 (medium) beside its copy
            list(pool.map(lambda n: world.resize(f"r-{n}", n, "medium"), vms))
        ends = {n: _ended(world, "vmresizes", f"r-{n}", ("VerifyResize", "Failed"))
                for n in vms}
        moving = [n for n, s in ends.items() if s["phase"] == "VerifyResize"]
        assert len(moving) == 1, ends
        assert world.status("vmquotas", "q")["used"]["vcpus"] == 6   # both copies count
        world.patch_resize(f"r-{moving[0]}", {"confirm": True})
        world.wait_phase(f"r-{moving[0]}", "Confirmed")
    assert peak.peak["vcpus"] <= 6, peak.peak
    for n, s in ends.items():
        if n in moving:
            continue
        assert s["reason"] == "QuotaExceeded", s
        assert "VMQuota q would be exceeded (vCPUs: 6 used + 2 asked > 6 allowed)" \
            in s["message"], s
        inst = world.status("instances", n)   # untouched: still where it was, unlocked
        assert (inst["phase"], inst["host"]) == ("Active", world.host("a"))
        assert "activeResize" not in inst
        assert world.events_once(f"r-{n}", "QuotaExceeded")
    q = world.status("vmquotas", "q")
    # Confirmed: the instance's charge is its new size, the resize's is gone.
    assert q["used"] == {"instances": 4, "vcpus": 5, "memoryMiB": 3 * 1024 + 2048,
                         "diskGiB": 3 * 10 + 20}, q
    assert not [k for k in q["charges"] if k.startswith("VMResize/")]


def test_plan_shows_the_headroom_and_a_refusal(kubeconfig: Path, world: World,
                                               agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    make_quota(world, vcpus=2)
    world.instance("web", "small", host="a")
    wait_for("the instance's charge", lambda: world.status("vmquotas", "q").get(
        "used", {}).get("vcpus") == 1)
    rc, out, err = run(kubeconfig, world.ns, "plan", "web", "--flavor", world.flavor("medium"))
    assert "quota q: instances 1 used, no limit; vCPUs 1/2 (1 left)" in out, out + err
    assert ("the operator would refuse it: QuotaExceeded: VMQuota q would be exceeded "
            "(vCPUs: 1 used + 2 asked > 2 allowed)") in out, out
    assert rc == 3, out + err
    world.co.patch_namespaced_custom_object(G, V, world.ns, "vmquotas", "q",
                                            {"spec": {"hard": {"vcpus": 3}}})
    rc, out, err = run(kubeconfig, world.ns, "plan", "web", "--flavor", world.flavor("medium"))
    assert "vCPUs 1/3 (2 left)" in out, out + err
    assert "quota: the resize fits (+2 vCPUs" in out
    assert rc == 0, out + err


def test_a_quota_made_after_its_instances_counts_them(
        world: World, agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.instance("vm1", "small", host="a")
    world.instance("vm2", "medium", host="a")
    make_quota(world, vcpus=3)   # already full: the hosts hold 1 + 2
    used = wait_for("the new quota to count what the namespace holds", lambda: (
        u := world.status("vmquotas", "q").get("used")) and u.get("vcpus") == 3 and u)
    assert used == {"instances": 2, "vcpus": 3, "memoryMiB": 1024 + 2048, "diskGiB": 30}
    conds = {c["type"]: c for c in world.status("vmquotas", "q")["conditions"]}
    assert conds["Exhausted"]["status"] == "True"
    world.instance("vm3", "small", wait=False)
    st = _ended(world, "instances", "vm3", ("Active", "Error"))
    assert st["phase"] == "Error"
    assert "vCPUs: 3 used + 1 asked > 3 allowed" in st["message"]
