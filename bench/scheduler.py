"""Benchmark: one scheduling decision among 10,000 and 100,000 hosts (the pure function;
target < 50 ms at 10,000, DESIGN.md), and what the operator adds around it per decision:
the snapshot of its watch-fed Host view (:mod:`vmresize.operator.persistence.hostview`).

    .venv/bin/python -m bench.scheduler

Results: ``bench/results/scheduler.{json,md}``.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench import fleetreport

from vmresize.api.host import Host
from vmresize.operator.decisions.scheduler import HostState, Request, Weights, select
from vmresize.operator.persistence.hostview import HostView


def _hosts(n: int, clock: float) -> list[HostState]:
    rnd = random.Random(1)
    return [HostState(name=f"host-{i:06d}", heard=clock - rnd.randint(0, 90),
                      enabled=rnd.random() > 0.02, vcpus=64, memory_mib=262144, disk_gib=4000,
                      used_vcpus=rnd.randint(0, 300), used_memory_mib=rnd.randint(0, 262000),
                      used_disk_gib=rnd.randint(0, 4000), labels={"zone": rnd.choice("abc")})
            for i in range(n)]


def _view(n: int, now: datetime) -> HostView:
    view = HostView()
    for i in range(n):
        view.put(Host.model_validate({
            "metadata": {"name": f"host-{i:06d}", "resourceVersion": str(i + 1)},
            "spec": {"enabled": True},
            "status": {"capacity": {"vcpus": 64, "memoryMiB": 262144, "diskGiB": 4000},
                       "ready": True, "heartbeat": now.isoformat()}}).model_dump(
            mode="json", by_alias=True, exclude_none=True))
    return view


def _ms(times: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times) * 1000, 2),
            "max_ms": round(max(times) * 1000, 2)}


def measure(n: int, runs: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    hosts = _hosts(n, time.monotonic())
    req = Request(vcpus=8, memory_mib=32768, disk_gib=80, clock=time.monotonic(),
                  source_host="host-000001",
                  selector={"zone": "a"})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = select(hosts, req, Weights(ram=1.0, cpu=0.5, disk=0.25))
        times.append(time.perf_counter() - t0)
    view = _view(n, now)
    snaps = []
    for _ in range(runs):
        t0 = time.perf_counter()
        view.hosts()
        snaps.append(time.perf_counter() - t0)
    row = {"hosts": n, "runs": runs, "select": _ms(times), "view_snapshot": _ms(snaps),
           "chosen": getattr(out, "host", None)}
    print(row, flush=True)
    return row


def main() -> None:
    rows = [measure(10_000, 50), measure(100_000, 10)]
    md = ["# Scheduler\n", "| hosts | select median ms | max | view snapshot median ms | "
          "target |", "|---|---|---|---|---|"]
    for r in rows:
        target = fleetreport.met(r["select"]["median_ms"] < 50) + " (< 50 ms)" \
            if r["hosts"] == 10_000 else ""
        md.append(f"| {r['hosts']} | {r['select']['median_ms']} | {r['select']['max_ms']} | "
                  f"{r['view_snapshot']['median_ms']} | {target} |")
    fleetreport.write("scheduler", {"rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
