"""Two real libvirt daemons, the real operator, two real agents: a booting VM is resized.

Each "host" is what a node has: its own private ``libvirtd`` (``hack/libvirtd.py``: its own
socket directory, state and QEMU processes), reached by its agent as
``qemu+unix:///system?socket=…``, and its own storage root; the agents send the files to
each other over their real SSH service on 127.0.0.2/3. On the source daemon an admin's
domain is defined outside vmresize: the booting guest (``hack/guest.py``) with a root disk
on a backing file, a raw data disk, an ephemeral disk and two user-mode NICs
(``tests.e2e.test_whole_vm.make_vm``). The test does what a user does (an Instance that
adopts it, a VMResize to a bigger flavor, confirm) and checks the ground truth: what the
guest printed on each side, the domains and QEMU processes of each daemon, the definition
diff, the sha256 of every file, and how the power-off went (the guest answered ACPI; the
agent's MigrateDisk result and the source daemon's own log say so).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from hack import guest_domain as gd
from hack import guest_init
from hack.guest import Guest
from tests.e2e.test_real_libvirtd import daemon
from tests.e2e.test_whole_vm import CHANGED, INSTANCE_DIR, MACS, make_vm, sha
from tests.support.full_stack_harness import FLAVORS, Stack

from vmresize.agent.hypervisor import domainxml
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import DomainSize, PowerState
from vmresize.api.meta import API_VERSION

BOOT = 240.0  # TCG on 2 shared cores; a bound, not a benchmark
BIG = FLAVORS["big"]


def same_but_marker(a: Path, b: Path) -> bool:
    """Equal bytes except the marker block the guest rewrites at every boot."""
    lo, hi = guest_init.MARKER_OFFSET, guest_init.MARKER_OFFSET + guest_init.SECTOR
    x, y = a.read_bytes(), b.read_bytes()
    return len(x) == len(y) and x[:lo] == y[:lo] and x[hi:] == y[hi:]


def test_resize_on_two_real_daemons_boots_the_guest_on_the_destination(
        kubeconfig: Path, guest: Guest, tmp_path: Path) -> None:
    with daemon(tmp_path / "lvd-a") as da, daemon(tmp_path / "lvd-b") as db:
        assert da.sockdir != db.sockdir
        s = Stack(kubeconfig, tmp_path / "stack", libvirt_uris=(da.uri, db.uri),
                  power_off_timeout=120)
        hva, hvb = LibvirtHypervisor(da.uri), LibvirtHypervisor(db.uri)
        try:
            s.start()
            src, dst = s.agents.values()
            name = f"adm-{uuid.uuid4().hex[:6]}"
            xml, _ = make_vm(src.storage_root, guest, name)
            hva.define_xml(xml)
            hva.start(name)
            s.apply({"apiVersion": API_VERSION, "kind": "Instance",
                     "metadata": {"name": "web", "namespace": s.ns},
                     "spec": {"flavor": s.flavor("small"), "host": src.name,
                              "adopt": {"domainName": name}}})
            inst = s.wait_status("instances", "web", "Active", bad=("Error",))
            assert (inst["host"], inst["domainName"]) == (src.name, name)
            before = hva.export(name)  # as adopted: the owner's UID is in its metadata
            first = gd.wait_serial(src.storage_root / INSTANCE_DIR / "serial.log",
                                   lambda g: g.ready is not None, timeout=BOOT,
                                   alive=lambda: hva.state(name) == PowerState.RUNNING,
                                   what="boot on the source daemon")
            assert [first.nics[n]["mac"] for n in ("eth0", "eth1")] == list(MACS)
            assert first.disks["vdb"]["boot"] == "42"
            assert len(da.qemu_pids()) == 1

            st = s.resize("grow", "web", "big")
            assert (st["sourceHost"], st["destHost"]) == (src.name, dst.name)
            dom = st["destDomainName"]
            # The power-off was graceful: the guest saw the ACPI button and shut itself
            # down; the agent recorded it; the source daemon logged a guest shutdown.
            left = gd.read_serial(src.storage_root / INSTANCE_DIR / "serial.log")
            assert left.acpi_power_button
            assert left.shutdown_done
            task = s.task("grow", "MigrateDisk")
            assert task["status"]["result"]["powerOff"] == "Graceful", task["status"]
            assert task["status"]["message"].startswith("powered off gracefully (ACPI)")
            qlog = da.qemu_log(name).read_text(errors="replace")
            assert "reason=shutdown" in qlog, qlog[-2000:]
            assert "reason=destroyed" not in qlog
            # Off, held aside (not defined), every file still there, each checksum the
            # powered-off source's.
            assert not hva.exists(name)
            assert da.qemu_pids() == []
            sent = {f["path"]: f for f in st["sourceDisks"]}
            files = [p for p, f in sent.items() if f["role"] in ("Disk", "Backing")]
            assert sorted(Path(f).name for f in files) == [
                "base.raw", "data.raw", "ephemeral.qcow2", "root.qcow2"]
            assert {f: sha(src.storage_root / f) for f in files} == {
                f: sent[f]["checksum"] for f in files}
            data = f"{INSTANCE_DIR}/data.raw"
            # The destination: daemon B runs the domain with the new flavor, the
            # definition kept but for what a resize changes, and the guest booted there.
            assert hvb.state(dom) == PowerState.RUNNING
            assert hvb.get_size(dom) == DomainSize(vcpus=BIG[0], memory_mib=BIG[1])
            after = hvb.export(dom)
            changed = domainxml.diff(before, after)
            print("definition fields changed across the two daemons:", sorted(changed))
            # The memory stays (the admin's 128 MiB is the big flavor's); the operator
            # names the new copy.
            assert changed == CHANGED - {"memory", "currentMemory"} | {"name"}
            assert domainxml.flatten(after)["name"] == dom
            dest_serial = Path(domainxml.flatten(after)["devices/serial/source@path"])
            assert dest_serial.is_relative_to(dst.storage_root)
            there = gd.wait_serial(dest_serial, lambda g: g.ready is not None, timeout=BOOT,
                                   alive=lambda: hvb.state(dom) == PowerState.RUNNING,
                                   what="boot on the destination daemon")
            assert [there.nics[n]["mac"] for n in ("eth0", "eth1")] == list(MACS)
            assert there.disks["vda"]["boot"] == "2"
            assert there.disks["vdb"] == {"bytes": str(16 * 1024**2), "serial": "vm-data",
                                          "boot": "43"}
            moved_data = dst.storage_root / sent[data]["peerPath"]
            assert same_but_marker(src.storage_root / data, moved_data)
            dest_pids = db.qemu_pids()
            assert len(dest_pids) == 1

            s.decide("grow", "confirm")
            # The source daemon has no domain left and the source storage none of its files.
            assert name not in hva.list_domains()
            assert [f for f in sent if (src.storage_root / f).exists()] == []
            assert not (src.storage_root / INSTANCE_DIR).exists()
            # Confirm never touched the destination: the same QEMU still runs the guest.
            assert db.qemu_pids() == dest_pids
            now = s.status("instances", "web")
            assert (now["phase"], now["host"], now["flavor"]) == ("Active", dst.name,
                                                                  s.flavor("big"))
            assert (now["vcpus"], now["memoryMiB"], now["domainName"]) == (*BIG[:2], dom)
        finally:
            s.close()
            hva.close()
            hvb.close()
