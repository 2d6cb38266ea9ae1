"""The demo's VM: the booting test guest as an admin's existing domain, and what it says.

``make demo`` (``hack/demo.sh``) resizes a VM that really boots (``hack/guest.py``: Debian's
cloud kernel and a busybox initramfs under TCG), defined outside vmresize the way an admin's
VM would be and then adopted by an Instance. This module makes it and reads its serial log:

    python -m hack.demo_guest create --uri URI --storage-root DIR --name web-1 --mac MAC
    python -m hack.demo_guest booted --serial LOG --boot N --host HOST
    python -m hack.demo_guest stopped --serial LOG --host HOST

``create`` writes a 1 GiB qcow2 root disk (its first sector says ``hello from <name>``,
which the guest never writes) and a 16 MiB raw data disk under ``legacy/<name>/``, then
defines and starts the domain (one user-mode virtio NIC with the given MAC). With
``qemu:///embed`` it must run before the host's agent opens the same root; the QEMU it
starts outlives this process, as a VM outlives an agent restart. Its parent is then a small
process left behind for it (:func:`create_kept`), which reaps it the moment it exits, as a
hypervisor's init does: left to this sandbox's init, an exited QEMU stayed a zombie for
1.7 s, and libvirt reports a domain shut off only once its QEMU is gone (measured: that
much more downtime for the demo's first resize). ``booted`` waits until the
guest reports boot ``N`` on its root disk and prints what it saw (NIC, MAC, disks);
``stopped`` prints whether the guest answered the ACPI power button and shut down cleanly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import traceback
from pathlib import Path

from hack import guest_domain as gd
from hack.guest import ensure_guest

INSTANCE_DIR = "legacy"
DATA_BYTES = 16 * 1024 * 1024


def create(uri: str, storage_root: Path, name: str, mac: str, memory_mib: int = 128) -> None:
    from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor  # the venv's

    d = storage_root / INSTANCE_DIR / name
    d.mkdir(parents=True, exist_ok=True)
    root = gd.Disk(d / "disk.qcow2", "vda", "qcow2", serial=f"{name}-root")
    seed = d / "seed.raw"  # sparse: converted, only the first sector takes room
    with seed.open("wb") as f:
        f.write(f"hello from {name}".encode())
        f.truncate(1024**3)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(seed),
                    str(root.path)], check=True, timeout=120)
    seed.unlink()
    data = gd.Disk(d / "data.raw", "vdb", "raw", serial=f"{name}-data")
    with data.path.open("wb") as f:
        f.truncate(DATA_BYTES)
    xml = gd.domain_xml(name, ensure_guest(), disks=[root, data], macs=[mac],
                        serial_log=d / "serial.log", memory_mib=memory_mib, vcpus=1)
    hv = LibvirtHypervisor(uri)  # registers the event loop qemu:///embed needs
    try:
        hv.define_xml(xml)
        hv.start(name)
    finally:
        hv.close()


def create_kept(uri: str, storage_root: Path, name: str, mac: str,
                memory_mib: int = 128) -> None:
    """:func:`create` in a child of a keeper process that stays (detached) as long as the
    VM's QEMU does, reaping it as it exits; returns once the VM runs."""
    r, w = os.pipe()
    if os.fork() == 0:   # the keeper: QEMU is re-parented to it (a subreaper)
        os.close(r)
        from vmresize.agent.hypervisor import embedded
        embedded.become_subreaper()
        child = os.fork()
        if child == 0:  # opens libvirt, starts QEMU, exits: the root is free for the agent
            code = 0
            try:
                create(uri, storage_root, name, mac, memory_mib)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        _, status = os.waitpid(child, 0)
        os.write(w, bytes([os.waitstatus_to_exitcode(status) & 0xFF]))
        os.close(w)
        os.setsid()   # neither the demo's Ctrl-C nor its output pipes reach it
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        while True:
            try:
                os.wait()
            except ChildProcessError:   # QEMU is gone (the demo's cleanup): so is the keeper
                os._exit(0)
    os.close(w)
    if os.read(r, 1) != b"\0":
        raise SystemExit(f"creating {name} failed")


def booted(serial: Path, boot: int, host: str, timeout: float) -> None:
    log = gd.wait_serial(serial, lambda g: g.ready is not None and g.disks.get(
        "vda", {}).get("boot") == str(boot), timeout=timeout, what=f"boot {boot} on {host}")
    for nic, seen in sorted(log.nics.items()):
        print(f"  the guest on {host} (boot {boot}) sees {nic} with MAC {seen.get('mac')}, "
              f"address {seen.get('ip', '-')}")
    for disk, seen in sorted(log.disks.items()):
        print(f"  the guest on {host} sees {disk} ({seen.get('serial')}): "
              f"{int(seen.get('bytes', 0)) // 2**20} MiB")


def stopped(serial: Path, host: str) -> None:
    log = gd.read_serial(serial)
    if log.acpi_power_button and log.shutdown_done:
        print(f"  the guest on {host} got the ACPI power button and shut itself down cleanly")
    else:
        print(f"  the guest on {host} did NOT shut down by itself "
              f"(ACPI button seen: {log.acpi_power_button}, shutdown done: {log.shutdown_done})")


def main() -> int:
    parser = argparse.ArgumentParser(description="the demo's booting VM")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("--uri", required=True)
    c.add_argument("--storage-root", type=Path, required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--mac", required=True)
    b = sub.add_parser("booted")
    b.add_argument("--serial", type=Path, required=True)
    b.add_argument("--boot", type=int, required=True)
    b.add_argument("--host", required=True)
    b.add_argument("--timeout", type=float, default=300.0)
    s = sub.add_parser("stopped")
    s.add_argument("--serial", type=Path, required=True)
    s.add_argument("--host", required=True)
    args = parser.parse_args()
    if args.command == "create":
        create_kept(args.uri, args.storage_root, args.name, args.mac)
    elif args.command == "booted":
        booted(args.serial, args.boot, args.host, args.timeout)
    else:
        stopped(args.serial, args.host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
