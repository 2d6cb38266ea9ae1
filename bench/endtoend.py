"""Benchmark: the operator end to end on the real control plane.

1. apply -> VerifyResize for an empty disk, p50/p95 over 20, with the real operator and
   three real agents (embedded QEMU driver, tests.support.full_stack_harness): one small
   instance is cold-migrated 20 times (each resize confirmed before the next); timed from
   just before the create to the watch event that shows VerifyResize; target p50 < 1 s.
2. 100 resizes at once over 50 Hosts with the operator and scripted agents
   (tests.support.op_harness.Fulfiller): every Host version the API server sends is checked
   against capacity x ratio; target 0 over-committed.

Results: ``bench/results/endtoend.{json,md}``.

    .venv/bin/python -m bench.endtoend
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bench import fleetreport
from bench.fleet import PhaseWatch, _pct
from bench.fleetkit import Cluster, wait
from kubernetes import client, watch
from tests.support.full_stack_harness import Stack
from tests.support.kube import kubectl
from tests.support.op_harness import TEST_LABEL, Fulfiller, G, Operator, V, World

SAMPLES = 20
DONE = {"VerifyResize", "Failed", "RolledBack", "RollbackFailed"}


def overhead(cluster: Cluster) -> dict[str, Any]:
    (cluster.dir / "stack").mkdir(exist_ok=True)
    s = Stack(cluster.lc.kubeconfig, cluster.dir / "stack").start()
    pw = PhaseWatch(cluster, s.ns)
    lat: list[float] = []
    try:
        s.create_instance("vm", "small", "bench: empty disk")
        for i in range(SAMPLES + 1):
            name = f"m{i:02d}"
            t0 = time.monotonic()
            s.apply({"apiVersion": "vmresize.io/v1alpha1", "kind": "VMResize",
                     "metadata": {"name": name, "namespace": s.ns},
                     "spec": {"instanceName": "vm"}})
            t1 = wait(f"{name} VerifyResize", lambda n=name: pw.first(n, DONE), timeout=180,
                      interval=0.005)
            phase = s.status("vmresizes", name).get("phase")
            if phase != "VerifyResize":
                raise RuntimeError(f"{name} ended {phase}:\n{s.diagnostics()}")
            if i:   # the first one warms up (the agents' first copy, imports)
                lat.append(t1 - t0)
            s.decide(name, "confirm")
    finally:
        pw.stop()
        s.close()
    out = {"samples": len(lat), "p50_s": round(statistics.median(lat), 3),
           "p95_s": round(_pct(lat, 0.95), 3), "min_s": round(min(lat), 3),
           "max_s": round(max(lat), 3), "loadavg": fleetreport.machine()["loadavg"]}
    print(f"apply->VerifyResize (empty disk, cold migration): {out}", flush=True)
    return out


def _used(h: dict[str, Any]) -> list[int]:
    rs = [a["resources"] for a in ((h.get("status") or {}).get("allocations") or {}).values()]
    return [sum(r.get(k, 0) for r in rs) for k in ("vcpus", "memoryMiB", "diskGiB")]


def _limit(h: dict[str, Any]) -> list[float]:
    spec, st = h.get("spec") or {}, h.get("status") or {}
    cap, ratios = st.get("capacity") or {}, spec.get("allocationRatios") or {}
    res = spec.get("reserved") or {"memoryMiB": 512}
    return [(cap.get("vcpus", 0) - res.get("vcpus", 0)) * ratios.get("cpu", 4.0),
            (cap.get("memoryMiB", 0) - res.get("memoryMiB", 0)) * ratios.get("memory", 1.0),
            (cap.get("diskGiB", 0) - res.get("diskGiB", 0)) * ratios.get("disk", 1.0)]


def concurrent(cluster: Cluster, resizes: int = 100, hosts: int = 50) -> dict[str, Any]:
    ns = "bench-concurrent"
    kubectl(cluster.lc.kubeconfig, "create", "namespace", ns)
    world = World(cluster.api, ns)
    world.make_flavors()
    names = [world.make_host(f"c{i:02d}", memory_mib=8192 + 512) for i in range(hosts)]
    versions, violations, reconnects = 0, [], 0
    w = watch.Watch()
    stopping = threading.Event()

    def check() -> None:
        nonlocal versions, reconnects, w
        co = client.CustomObjectsApi(cluster.api)
        rv = ""
        while not stopping.is_set():
            try:
                for ev in w.stream(co.list_cluster_custom_object, G, V, "hosts",
                                   label_selector=f"{TEST_LABEL}={ns}", resource_version=rv):
                    h = ev["object"]
                    rv = h["metadata"]["resourceVersion"]
                    if not (h.get("status") or {}).get("capacity"):
                        continue
                    versions += 1
                    for u, lim in zip(_used(h), _limit(h), strict=True):
                        if u > lim:
                            violations.append(f"{h['metadata']['name']} rv {rv}: {u} > {lim}")
            except Exception:   # a dropped stream: resume from the last version seen
                reconnects += 1
                w = watch.Watch()

    threading.Thread(target=check, daemon=True).start()
    op = Operator(cluster.lc.kubeconfig, ns, cluster.dir / "operator-concurrent.log").start()
    try:
        with Fulfiller(cluster.api, ns, names):
            for i in range(resizes):
                world.instance(f"vm{i:03d}", "small", wait=False)
            wait("instances Active", lambda: all(
                world.status("instances", f"vm{i:03d}").get("phase") == "Active"
                for i in range(resizes)), timeout=600, interval=1)
            t0 = time.monotonic()
            for i in range(resizes):
                world.resize(f"r{i:03d}", f"vm{i:03d}", "large")
            phases = wait("every resize settled", lambda: (p := [
                world.status("vmresizes", f"r{i:03d}").get("phase", "") for i in range(resizes)])
                and all(x in DONE for x in p) and p, timeout=900, interval=1)
            took = time.monotonic() - t0
            final = [world.get("hosts", n) for n in names]
    finally:
        op.stop()
        stopping.set()
        w.stop()
    over = [n for n, h in zip(names, final, strict=True)
            if any(u > lim for u, lim in zip(_used(h), _limit(h), strict=True))]
    out = {"resizes": resizes, "hosts": hosts, "seconds_to_settle": round(took, 1),
           "phases": {p: phases.count(p) for p in sorted(set(phases))},
           "host_versions_checked": versions, "check_watch_reconnects": reconnects,
           "overcommitted_versions": len(violations),
           "overcommitted_hosts_at_end": len(over), "violations": violations[:10],
           "loadavg": fleetreport.machine()["loadavg"]}
    print(f"concurrent: {out}", flush=True)
    return out


def markdown(r: dict[str, Any]) -> str:
    met = fleetreport.met
    o, c = r["overhead"], r["concurrent"]
    return "\n".join([
        "# End to end on the real control plane\n",
        "## apply -> VerifyResize, empty disk (real operator, 3 agents, embedded QEMU)\n",
        "| samples | p50 s | p95 s | min | max | load | target |", "|---|---|---|---|---|---|---|",
        f"| {o['samples']} | {o['p50_s']} | {o['p95_s']} | {o['min_s']} | {o['max_s']} | "
        f"{o['loadavg']} | {met(o['p50_s'] < 1.0)} (p50 < 1 s) |", "",
        "## 100 resizes at once over 50 Hosts (scripted agents)\n",
        "| resizes | Hosts | settled in s | phases | Host versions checked | over-committed |"
        " target |", "|---|---|---|---|---|---|---|",
        f"| {c['resizes']} | {c['hosts']} | {c['seconds_to_settle']} | {c['phases']} | "
        f"{c['host_versions_checked']} | {c['overcommitted_versions']} versions, "
        f"{c['overcommitted_hosts_at_end']} at the end | "
        f"{met(c['overcommitted_versions'] == 0 and c['overcommitted_hosts_at_end'] == 0)} "
        "(0) |", ""])


def main() -> None:
    cluster = Cluster()
    results: dict[str, Any] = {}
    try:
        results["concurrent"] = concurrent(cluster)
        results["overhead"] = overhead(cluster)
    finally:
        cluster.stop()
    fleetreport.write("endtoend", results, markdown(results))


if __name__ == "__main__":
    main()
