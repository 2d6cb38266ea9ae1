"""On-demand benchmark (not a test): VM downtime of a move, offline (Nova's way) vs pre-copy.

Usage (from the repository root)::

    .venv/bin/python -m bench.downtime [--sizes 256,1024,4096] [--out bench/results]
                                       [--timeline]

For each size, a root disk with that many MiB of random data is made once; then, for each
mode, the booting test guest (``hack/guest.py``, its writer appending fsync'd records to
``vdb`` every 5 ms all along) runs from a copy of it on host ``a`` and moves to host ``b``
with the real executors and the real asyncssh transfer on 127.0.0.1
(:mod:`tests.support.precopy_rig`): Prepare, MigrateDisk, Finish. The downtime is what
the operator records in ``status.downtimeSeconds``: from MigrateDisk's power-off request
(``poweredOffAt``, a graceful ACPI shutdown the guest answers) to Finish's start of the
destination domain (``startedAt``). Also reported: the time MigrateDisk took after the
power-off, Finish's time, the total, and the writer's last record (checked to be on the
destination before it starts).

Writes ``downtime.json`` and ``downtime.md`` under ``--out``, stamped with the machine
(CPU count, load average before and after). On a machine shared with other work the
numbers move; compare the two modes of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import select
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hack import guest_domain as gd
from hack.guest import ensure_guest
from tests.support.precopy_rig import hypervisor, rig, root_disk, run, writer_records

from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor


def qemu_pid(name: str) -> int:
    """The QEMU process running the domain ``name`` (by its ``-name guest=NAME,``)."""
    want = f"guest={name},".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"qemu-system-x86_64") and any(
                    a.startswith(want) for a in argv):
                return int(entry)
    raise RuntimeError(f"no QEMU process runs {name}")


def exit_time(pid: int, timeout: float = 600.0) -> float | None:
    """Wall-clock time the process ``pid`` exits (blocking; a pidfd turns readable)."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return time.time() if ready else None
    finally:
        os.close(fd)


class Timeline(logging.Handler):
    """The agent's log records (wall clock, message) while a move runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, f"{record.name}: {record.getMessage()}"))


async def one(hv: LibvirtHypervisor, image: Path, mib: int, mode: str, n: int,
              timeline: bool = False) -> dict[str, Any]:
    pre = mode == "pre-copy"
    async with rig(ensure_guest(), hv, f"bd{n}") as r:
        r.make_vm(mib, root_image=image)
        await r.booted()
        gone = asyncio.ensure_future(asyncio.to_thread(exit_time, qemu_pid(r.name)))
        b = r.executor("b")[0]
        await run(b, r.prepare(pre_copy=pre))
        log, agent = Timeline(), logging.getLogger("vmresize")
        agent.setLevel(logging.INFO)
        agent.addHandler(log)
        try:
            t0 = time.monotonic()
            out = await run(r.executor("a")[0], r.migrate(pre_copy=pre))
            t1 = time.monotonic()
            w1 = time.time()
            fin = await run(b, r.finish(out.result.disks or []))
            t2 = time.monotonic()
        finally:
            agent.removeHandler(log)
        off, on = out.result.powered_off_at, fin.result.started_at
        assert off is not None
        assert on is not None
        off_s, on_s, gone_s = off.timestamp(), on.timestamp(), await gone
        assert gone_s is not None
        last = gd.read_serial(r.serial()).writer_stopped
        arrived = max(writer_records(r.dest("data.qcow2")), default=0)
        overlay = sum(f.size_bytes for f in out.result.disks or []
                      if f.role.value == "Overlay")
        if timeline:
            print(f"--- {mib} MiB {mode}: seconds after the power-off request")
            print(f"{gone_s - off_s:8.3f}  source QEMU gone")
            for at, what in log.records:
                print(f"{at - off_s:8.3f}  {what}")
            print(f"{w1 - off_s:8.3f}  MigrateDisk returned")
            print(f"{on_s - off_s:8.3f}  destination started", flush=True)
        return {"data_mib": mib, "mode": mode,
                "downtime_s": round(on_s - off_s, 3),
                "guest_shutdown_s": round(gone_s - off_s, 3),
                "vmresize_s": round(on_s - gone_s, 3),
                "migrate_after_power_off_s": out.result.downtime_seconds,
                "finish_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
                "overlay_bytes": overlay, "writer_last_record": last,
                "writer_last_on_destination": arrived == last}


async def bench(sizes: list[int], work: Path, timeline: bool = False
                ) -> list[dict[str, Any]]:
    hv = hypervisor(work / "lv")
    rows = []
    try:
        for i, mib in enumerate(sizes):
            image = await asyncio.to_thread(root_disk, work / f"root-{mib}.qcow2", mib)
            for j, mode in enumerate(("offline", "pre-copy")):
                row = await one(hv, image, mib, mode, i * 2 + j, timeline)
                print(json.dumps(row), flush=True)
                rows.append(row)
            image.unlink()
    finally:
        hv.close()
    return rows


GUEST_SHUTDOWN = (
    "What the guest does on shutdown (`hack/guest_init.py`): the ACPI power button wakes "
    "busybox `acpid`, which runs `poweroff`; busybox init runs the shutdown script, which "
    "stops the writer (SIGTERM; it finishes the record it is writing, fsync'd), runs "
    "`sync`, prints `shutdown done` and powers off with `poweroff -f` (sync, reboot(2)); "
    "busybox init's own pauses after the script (1 s after SIGTERM to all, 1 s \"for the "
    "console\") are skipped. Guest shutdown = power-off request -> source QEMU process "
    "gone; vmresize = source QEMU gone -> destination QEMU started (noticing the "
    "power-off, holding the source, sending what changed, Finish); downtime = their sum, "
    "as issue 11 defines it (`status.downtimeSeconds`).")


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [f"# Downtime: offline vs pre-copy ({doc['when']})", "",
             f"{m['cpus']} CPUs, {m['platform']}; load average {m['load_before']} before, "
             f"{m['load_after']} after. Guest: the booting test guest under TCG with a writer "
             "(fsync'd records every 5 ms); graceful ACPI power-off.", "", GUEST_SHUTDOWN, "",
             "| data | mode | downtime s | guest shutdown s | vmresize s "
             "| MigrateDisk after power-off s | Finish s | total s "
             "| overlay MiB | last record on dest |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['data_mib']} MiB | {r['mode']} | {r['downtime_s']} | "
                     f"{r.get('guest_shutdown_s', '-')} | {r.get('vmresize_s', '-')} | "
                     f"{r['migrate_after_power_off_s']} | {r['finish_s']} | {r['total_s']} | "
                     f"{r['overlay_bytes'] / 2**20:.1f} | "
                     f"{'yes' if r['writer_last_on_destination'] else 'NO'} |")
    by = {(r["data_mib"], r["mode"]): r for r in doc["rows"]}
    lines += ["", "| data | pre-copy / offline downtime | pre-copy / offline total |",
              "|---|---|---|"]
    for mib in sorted({r["data_mib"] for r in doc["rows"]}):
        off, pre = by.get((mib, "offline")), by.get((mib, "pre-copy"))
        if off and pre:
            lines.append(f"| {mib} MiB | {pre['downtime_s'] / off['downtime_s']:.2f} | "
                         f"{pre['total_s'] / off['total_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,1024,4096", help="MiB of data, comma-separated")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--timeline", action="store_true",
                        help="print the agent's log lines of each move")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bd", dir="/tmp"))
    try:
        rows = asyncio.run(bench([int(s) for s in args.sizes.split(",")], work,
                                 args.timeline))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "rows": rows,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "qemu": subprocess.run(["qemu-img", "--version"], capture_output=True,
                                              text=True, check=False).stdout.split("\n")[0],
                       "load_before": [round(x, 2) for x in load_before],
                       "load_after": [round(x, 2) for x in os.getloadavg()]}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "downtime.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "downtime.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
