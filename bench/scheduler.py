"""Benchmark: one scheduling decision among 10,000 hosts (target < 50 ms, DESIGN.md).

    .venv/bin/python bench/scheduler.py
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from vmresize.operator.decisions.scheduler import HostState, Request, Weights, select


def main(n: int = 10_000, runs: int = 50) -> None:
    now = datetime.now(UTC)
    rnd = random.Random(1)
    hosts = [HostState(name=f"host-{i:05d}", heartbeat=now - timedelta(seconds=rnd.randint(0, 90)),
                       enabled=rnd.random() > 0.02, vcpus=64, memory_mib=262144, disk_gib=4000,
                       used_vcpus=rnd.randint(0, 300), used_memory_mib=rnd.randint(0, 262000),
                       used_disk_gib=rnd.randint(0, 4000), labels={"zone": rnd.choice("abc")})
             for i in range(n)]
    req = Request(vcpus=8, memory_mib=32768, disk_gib=80, now=now, source_host="host-00001",
                  selector={"zone": "a"})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = select(hosts, req, Weights(ram=1.0, cpu=0.5, disk=0.25))
        times.append(time.perf_counter() - t0)
    print(f"{n} hosts, {runs} runs: median {statistics.median(times) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms -> {out}"[:300])


if __name__ == "__main__":
    main()
