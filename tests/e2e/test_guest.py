"""The test guest really boots under QEMU (embedded libvirt driver) and shuts down by itself.

One boot checks what later tests rely on: the guest sees both virtio disks (one a qcow2
overlay on a raw backing file) and both user-mode NICs and says so on its serial console;
its boot counter and its writer's records land on the disks; ``shutdown()`` (an ACPI power
button press) stops it within a bound, with libvirt reporting a guest-initiated shutoff,
without any destroy.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from hack import guest_domain as gd
from hack import guest_init
from hack.guest import Guest

from vmresize.agent.hypervisor import embedded

BOOT_TIMEOUT = 240.0  # TCG on 2 shared cores boots in ~10-20 s; a bound, not a benchmark
SHUTDOWN_TIMEOUT = 60.0
MACS = ("52:54:00:7e:57:01", "52:54:00:7e:57:02")
BASE_SEED = b"vmresize test guest: backing file data\n"


@pytest.fixture
def embed_conn(embedded_root: Path) -> Iterator[libvirt.virConnect]:
    """A ``qemu:///embed`` connection on the process's embedded root."""
    conn = libvirt.open(embedded.embed_uri(embedded_root))
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def defined(conn: libvirt.virConnect, xml: str) -> Iterator[libvirt.virDomain]:
    """Define a domain; afterwards destroy it if a failure left it running, and undefine."""
    dom = conn.defineXML(xml)
    try:
        yield dom
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        dom.undefine()


def wait_shutoff(dom: libvirt.virDomain, timeout: float) -> tuple[float, int]:
    """Seconds until ``dom`` is shut off on its own, and libvirt's reason for it."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        state, reason = dom.state()
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            return time.monotonic() - start, reason
        time.sleep(0.2)
    raise AssertionError(f"{dom.name()} still {dom.state()} {timeout}s after shutdown()")


def make_disks(d: Path) -> tuple[gd.Disk, gd.Disk]:
    """vda: qcow2 overlay on a raw base holding BASE_SEED; vdb: raw, with a boot count of 41."""
    base = d / "base.raw"
    with base.open("wb") as f:
        f.write(BASE_SEED)
        f.truncate(32 * 1024 * 1024)
    vda = gd.Disk(d / "vda.qcow2", "vda", "qcow2", serial="vm-root")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(vda.path)], check=True, timeout=60)
    vdb = gd.Disk(d / "vdb.raw", "vdb", "raw", serial="vm-data")
    with vdb.path.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
        f.seek(guest_init.MARKER_OFFSET)
        f.write(b"VMRESIZE-GUEST boot=41 disk=vdb\n")
    return vda, vdb


def test_guest_boots_sees_devices_writes_and_powers_off(
        guest: Guest, embed_conn: libvirt.virConnect, tmp_path: Path) -> None:
    vda, vdb = make_disks(tmp_path)
    serial = tmp_path / "serial.log"
    name = f"guest-{uuid.uuid4().hex[:8]}"
    xml = gd.domain_xml(name, guest, disks=[vda, vdb], macs=MACS, serial_log=serial,
                        writer="vdb")
    with defined(embed_conn, xml) as dom:
        t0 = time.monotonic()
        dom.create()
        log = gd.wait_serial(serial, lambda g: g.ready is not None and g.writer_seen,
                             timeout=BOOT_TIMEOUT, alive=dom.isActive, what="guest ready")
        ready_s = time.monotonic() - t0
        assert log.ready is not None
        assert (log.ready["disks"], log.ready["nics"]) == ("2", "2")
        assert int(log.ready["inputs"]) >= 1  # the ACPI power button's input device
        assert log.disks["vda"] == {"bytes": str(32 * 1024**2), "serial": "vm-root",
                                    "boot": "1"}
        assert log.disks["vdb"] == {"bytes": str(16 * 1024**2), "serial": "vm-data",
                                    "boot": "42"}
        for nic, mac in zip(("eth0", "eth1"), MACS, strict=True):
            # a DHCP lease from user-mode networking: the NIC really passes traffic
            assert log.nics[nic] == {"mac": mac, "driver": "virtio_net", "ip": "10.0.2.15"}

        dom.shutdown()  # ACPI power button; never followed by a destroy
        shutdown_s, reason = wait_shutoff(dom, SHUTDOWN_TIMEOUT)
        assert reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, reason
        print(f"guest ready after {ready_s:.1f}s, shut off {shutdown_s:.1f}s after shutdown()")

    log = gd.read_serial(serial)
    assert log.acpi_power_button
    assert log.shutdown_done
    assert gd.boot_count(vda) == 1
    assert gd.boot_count(vdb) == 42
    base = gd.Disk(tmp_path / "base.raw", fmt="raw")
    assert gd.boot_count(base) is None  # the guest wrote into the overlay, not the base
    assert gd.read_bytes(vda, 0, len(BASE_SEED)) == BASE_SEED
    assert log.writer_stopped is not None
    assert log.writer_stopped >= 1
    records = gd.writer_records(vdb)
    n = log.writer_stopped
    expected = list(range(1, n + 1)) if n <= guest_init.WRITER_SLOTS else None
    assert max(records) == n, (max(records), n)
    if expected is not None:
        assert records == expected
