"""A real libvirtd (``hack/libvirtd.py``) runs the booting guest, and stays fast.

The daemon is reached the way an agent on a real host would reach it
(``qemu+unix:///system?socket=…``): define, start, see the guest boot with its disk, shut it
down with an ACPI request (no destroy), undefine. A second daemon started afterwards must
find the QEMU capabilities in its cache: without ``user = "root"`` every capability lookup
re-probed QEMU (a defineXML took ~48 s here, see the harness's docstring).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from hack import guest_domain as gd
from hack.guest import Guest
from hack.libvirtd import LibvirtdUnavailableError, PrivateLibvirtd

BOOT_TIMEOUT = 240.0  # TCG on 2 shared cores; a bound, not a benchmark
SHUTDOWN_TIMEOUT = 60.0


@contextlib.contextmanager
def daemon(workdir: Path) -> Iterator[PrivateLibvirtd]:
    d = PrivateLibvirtd(workdir)
    try:
        d.start()
    except LibvirtdUnavailableError as e:
        pytest.skip(f"no private libvirtd on this machine: {e}")
    try:
        yield d
    finally:
        d.stop()


def boot_and_power_off(d: PrivateLibvirtd, guest: Guest, workdir: Path) -> dict[str, float]:
    """Define, start, boot, ACPI shutdown, undefine one guest; returns the timings."""
    times = {}
    disk = gd.Disk(workdir / "vda.qcow2", "vda", "qcow2", serial="lvd-disk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk.path), "16M"],
                   check=True, timeout=60)
    serial = workdir / "serial.log"
    name = f"lvd-{uuid.uuid4().hex[:8]}"
    xml = gd.domain_xml(name, guest, disks=[disk], macs=["52:54:00:7e:57:10"],
                        serial_log=serial)
    t = time.monotonic()
    conn = libvirt.open(d.uri)
    times["open"] = time.monotonic() - t
    try:
        t = time.monotonic()
        dom = conn.defineXML(xml)
        times["define"] = time.monotonic() - t
        try:
            t = time.monotonic()
            dom.create()
            times["start"] = time.monotonic() - t
            assert dom.isActive()
            assert len(d.qemu_pids()) == 1  # a real QEMU, run by this daemon
            log = gd.wait_serial(serial, lambda g: g.ready is not None, timeout=BOOT_TIMEOUT,
                                 alive=dom.isActive, what=f"{name} ready")
            times["ready"] = time.monotonic() - t
            assert log.disks["vda"] == {"bytes": str(16 * 1024**2), "serial": "lvd-disk",
                                        "boot": "1"}
            assert log.nics["eth0"]["mac"] == "52:54:00:7e:57:10"
            t = time.monotonic()
            dom.shutdown()
            deadline = t + SHUTDOWN_TIMEOUT
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.2)
            times["shutdown"] = time.monotonic() - t
            state, reason = dom.state()
            assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF,
                                       libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN), dom.state()
            assert gd.read_serial(serial).shutdown_done
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()  # only when the test already failed
            dom.undefine()
        assert name not in conn.listDefinedDomains()
    finally:
        conn.close()
    assert gd.boot_count(disk) == 1
    return times


def test_real_libvirtd_runs_the_guest_and_reuses_its_capability_cache(
        guest: Guest, tmp_path: Path) -> None:
    report = []
    for run in ("first", "second"):
        workdir = tmp_path / run
        workdir.mkdir()
        t = time.monotonic()
        with daemon(workdir / "libvirtd") as d:
            up = time.monotonic() - t
            times = boot_and_power_off(d, guest, workdir)
            misses = d.capability_cache_misses()
            pid = d.pid
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped, and nothing of it left
        report.append(f"{run}: daemon up {up:.2f}s, cache misses {misses}, " +
                      ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
        if run == "second":
            # The first daemon filled the cache (or found it warm); this one must use it.
            assert misses == 0, f"QEMU capabilities probed again; see {d.log}"
    print("\n".join(report))
