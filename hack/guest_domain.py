"""Domain XML for the booting test guest (``hack/guest.py``), and reading back what it did.

The domain boots the kernel directly (``<os><kernel/><initrd/><cmdline/>``) under TCG on
q35 with ACPI (so ``shutdown()`` is a power button press the guest answers), virtio disks,
user-mode NICs (no privileges, no libvirt network) and the serial console in a file. No
graphics, video, USB or balloon: nothing the guest does not use, so it boots faster.

What the guest did is read from two places: the lines it prints on the serial console
(:func:`parse_serial`) and the blocks it writes on its disks (:func:`boot_count`,
:func:`writer_records`; offsets in ``hack/guest_init.py``).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from hack import guest_init
from hack.guest import Guest


@dataclass(frozen=True)
class Disk:
    """One virtio disk of the guest."""

    path: Path
    target: str = "vda"
    fmt: str = "qcow2"
    serial: str | None = None


def domain_xml(name: str, guest: Guest, *, disks: Sequence[Disk], macs: Sequence[str],
               serial_log: Path, memory_mib: int = 128, vcpus: int = 1,
               **options: str) -> str:
    """A TCG domain booting ``guest``; ``options`` become ``vmresize.KEY=VALUE`` arguments."""
    devices = []
    for d in disks:
        serial = f"<serial>{escape(d.serial)}</serial>" if d.serial else ""
        devices.append(
            f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(d.fmt)}/>"
            f"<source file={quoteattr(str(d.path))}/>"
            f"<target dev={quoteattr(d.target)} bus='virtio'/>{serial}</disk>")
    for mac in macs:
        devices.append(f"<interface type='user'><mac address={quoteattr(mac)}/>"
                       "<model type='virtio'/></interface>")
    devices.append(f"<serial type='file'><source path={quoteattr(str(serial_log))}/>"
                   "<target port='0'/></serial>")
    devices.append("<controller type='usb' model='none'/><video><model type='none'/></video>"
                   "<memballoon model='none'/>")
    kib = memory_mib * 1024
    return (
        "<domain type='qemu'>"
        f"<name>{escape(name)}</name>"
        f"<memory unit='KiB'>{kib}</memory><currentMemory unit='KiB'>{kib}</currentMemory>"
        f"<vcpu placement='static'>{vcpus}</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type>"
        f"<kernel>{escape(str(guest.kernel))}</kernel>"
        f"<initrd>{escape(str(guest.initrd))}</initrd>"
        f"<cmdline>{escape(guest.cmdline(**options))}</cmdline></os>"
        "<features><acpi/></features>"
        # A guest that reboots or panics (panic=-1) stops instead of looping under TCG.
        "<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>"
        "<on_crash>destroy</on_crash>"
        f"<devices>{''.join(devices)}</devices></domain>"
    )


_LINE = re.compile(rf"^{re.escape(guest_init.PREFIX)} (\S+)(?: (\S+))?(.*)$")


@dataclass
class GuestLog:
    """What the guest printed: ``disks``/``nics`` by name, each a dict of its ``k=v``."""

    disks: dict[str, dict[str, str]] = field(default_factory=dict)
    nics: dict[str, dict[str, str]] = field(default_factory=dict)
    ready: dict[str, str] | None = None
    writer_seen: bool = False
    writer_stopped: int | None = None
    acpi_power_button: bool = False
    shutdown_done: bool = False


def _pairs(text: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in text.split() if "=" in w)


def parse_serial(text: str) -> GuestLog:
    log = GuestLog()
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        kind, name, rest = m.group(1), m.group(2) or "", m.group(3)
        if kind == "disk":
            log.disks[name] = _pairs(rest)
        elif kind == "nic":
            log.nics[name] = _pairs(rest)
        elif kind == "ready":
            log.ready = _pairs(f"{name} {rest}")
        elif kind == "writer" and name == "start":
            log.writer_seen = True
        elif kind == "writer" and name == "stopped":
            log.writer_stopped = int(_pairs(rest)["seq"])
        elif kind == "acpi":
            log.acpi_power_button = True
        elif kind == "shutdown" and name == "done":
            log.shutdown_done = True
    return log


def read_serial(path: Path) -> GuestLog:
    return parse_serial(path.read_text(errors="replace") if path.exists() else "")


def wait_serial(path: Path, until: Callable[[GuestLog], bool], *, timeout: float,
                alive: Callable[[], bool] = lambda: True, what: str = "guest") -> GuestLog:
    """Poll the serial log until ``until`` holds; fail with its tail on timeout or death."""
    deadline = time.monotonic() + timeout
    while True:
        log = read_serial(path)
        if until(log):
            return log
        tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
        if not alive():
            raise AssertionError(f"{what}: the domain stopped; serial log tail:\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen after {timeout}s; serial log tail:\n{tail}")
        time.sleep(0.5)


def read_bytes(disk: Disk, offset: int, length: int) -> bytes:
    """``length`` bytes at guest offset ``offset`` of ``disk`` (qcow2 read through qemu-img)."""
    if disk.fmt == "raw":
        with disk.path.open("rb") as f:
            f.seek(offset)
            return f.read(length)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-f", disk.fmt, "-O", "raw", str(disk.path),
                        str(raw)], check=True, capture_output=True, timeout=300)
        with raw.open("rb") as f:
            f.seek(offset)
            return f.read(length)


def boot_count(disk: Disk) -> int | None:
    """The boot counter the guest keeps on ``disk`` (None: it never wrote one)."""
    block = read_bytes(disk, guest_init.MARKER_OFFSET, guest_init.SECTOR)
    m = re.match(rb"VMRESIZE-GUEST boot=(\d+) disk=", block)
    return int(m.group(1)) if m else None


def writer_records(disk: Disk) -> list[int]:
    """Sequence numbers of the writer's records found on ``disk``, in ring order."""
    ring = read_bytes(disk, guest_init.WRITER_OFFSET,
                      guest_init.WRITER_SLOTS * guest_init.SECTOR)
    return [int(m) for m in re.findall(rb"VMRESIZE-WRITER seq=(\d+)\n", ring)]
