"""Many resizes at once: claims never over-commit a host, checked on every Host version."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, watch
from tests.support.op_harness import TEST_LABEL, Fulfiller, G, Operator, V, World, wait_for

HOME_HOSTS = 5
PER_HOME = 10
SMALL_HOSTS = 10
RESIZES = HOME_HOSTS * PER_HOME   # 50
MEDIUM_PER_SMALL = 2              # 4096 MiB usable, medium = 2048 MiB


def _limit(host: dict[str, Any]) -> tuple[float, float, float]:
    spec, st = host.get("spec") or {}, host.get("status") or {}
    cap = st.get("capacity") or {}
    ratios = spec.get("allocationRatios") or {}
    res = spec.get("reserved") or {"memoryMiB": 512}
    return ((cap.get("vcpus", 0) - res.get("vcpus", 0)) * ratios.get("cpu", 4.0),
            (cap.get("memoryMiB", 0) - res.get("memoryMiB", 0)) * ratios.get("memory", 1.0),
            (cap.get("diskGiB", 0) - res.get("diskGiB", 0)) * ratios.get("disk", 1.0))


def _used(host: dict[str, Any]) -> tuple[int, int, int]:
    allocs = ((host.get("status") or {}).get("allocations") or {}).values()
    rs = [a["resources"] for a in allocs]
    return (sum(r.get("vcpus", 0) for r in rs), sum(r.get("memoryMiB", 0) for r in rs),
            sum(r.get("diskGiB", 0) for r in rs))


class HostWatch:
    """Checks every Host version the API server sends us against capacity x ratio."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.co = client.CustomObjectsApi(api)
        self.ns = ns
        self.versions = 0
        self.violations: list[str] = []
        self.peak: dict[str, int] = {}
        self.reconnects = 0
        self._w = watch.Watch()
        self._stopping = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostWatch:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._w.stop()
        self._t.join(timeout=15)

    def _run(self) -> None:
        rv = ""
        while not self._stopping.is_set():
            try:
                for ev in self._w.stream(self.co.list_cluster_custom_object, G, V, "hosts",
                                         label_selector=f"{TEST_LABEL}={self.ns}",
                                         resource_version=rv, timeout_seconds=600):
                    rv = ev["object"]["metadata"]["resourceVersion"]
                    self._check(ev["object"])
            except Exception:
                self.reconnects += 1
                rv = ""
                self._w = watch.Watch()

    def _check(self, h: dict[str, Any]) -> None:
        if not (h.get("status") or {}).get("capacity"):
            return   # just created; the agent has not reported capacity yet
        self.versions += 1
        used, lim = _used(h), _limit(h)
        name = h["metadata"]["name"]
        self.peak[name] = max(self.peak.get(name, 0), used[1])
        for u, cap, what in zip(used, lim, ("vcpus", "memoryMiB", "diskGiB"), strict=True):
            if u > cap:
                self.violations.append(f"{name} rv {h['metadata']['resourceVersion']}: "
                                       f"{what} {u} > {cap}")


def test_fifty_resizes_at_once_never_overcommit(world: World, agents: Fulfiller,
                                                operator: Operator,
                                                api_client: client.ApiClient) -> None:
    with HostWatch(api_client, world.ns) as hw:
        for i in range(HOME_HOSTS):
            # Exactly full of "small" instances: nothing else fits there.
            world.make_host(f"home{i}", vcpus=8, memory_mib=PER_HOME * 1024 + 512)
        for i in range(SMALL_HOSTS):
            world.make_host(f"s{i}", vcpus=4, memory_mib=MEDIUM_PER_SMALL * 2048 + 512)
        for i in range(RESIZES):
            world.instance(f"vm{i}", "small", host=f"home{i % HOME_HOSTS}", wait=False)
        wait_for("all instances Active", lambda: all(
            world.status("instances", f"vm{i}").get("phase") == "Active"
            for i in range(RESIZES)), timeout=180, interval=1)
        for i in range(RESIZES):
            world.resize(f"r{i}", f"vm{i}", "medium")

        def settled() -> dict[str, int] | None:
            items = world.co.list_namespaced_custom_object(G, V, world.ns, "vmresizes")["items"]
            phases: dict[str, int] = {}
            for it in items:
                p = (it.get("status") or {}).get("phase", "Pending")
                phases[p] = phases.get(p, 0) + 1
            return phases if set(phases) <= {"VerifyResize", "Failed"} else None

        phases = wait_for("every resize settled", settled, timeout=300, interval=1)
        # Confirm every successful one: the dest claims become the instances' claims.
        for i in range(RESIZES):
            if world.status("vmresizes", f"r{i}")["phase"] == "VerifyResize":
                world.patch_resize(f"r{i}", {"confirm": True})
        wait_for("confirms done", lambda: all(
            world.status("vmresizes", f"r{i}")["phase"] in ("Confirmed", "Failed")
            for i in range(RESIZES)), timeout=300, interval=1)

    print(f"host versions checked: {hw.versions}, watch reconnects: {hw.reconnects}, "
          f"peak MiB per host: {hw.peak}")
    assert hw.versions > RESIZES, "the watch saw the claims being made"
    assert hw.violations == []
    assert phases.get("VerifyResize") == SMALL_HOSTS * MEDIUM_PER_SMALL, phases
    assert phases.get("Failed") == RESIZES - SMALL_HOSTS * MEDIUM_PER_SMALL
    for i in range(RESIZES):
        st = world.status("vmresizes", f"r{i}")
        if st["phase"] == "Failed":
            assert st["reason"] == "NoValidHost"
    for i in range(SMALL_HOSTS):
        alloc = world.allocations(f"s{i}")
        assert len(alloc) == MEDIUM_PER_SMALL
        assert all(k.startswith("Instance/") for k in alloc)
