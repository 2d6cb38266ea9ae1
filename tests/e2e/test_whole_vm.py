"""A real VM defined outside vmresize moves whole between two agents on real QEMU.

The booting test guest (``hack/guest.py``) is defined in the source agent's embedded
libvirt before that agent starts, as an admin's domain would be: a qcow2 root disk on a raw
backing file, a raw data disk that begins with a qcow2 header, a qcow2 ephemeral disk, two
user-mode NICs. The test plays the operator with the pure mappings it uses
(``vmdisks.destination``/``arrived``): Adopt, start, Prepare, MigrateDisk (an ACPI power-off
the guest answers), Finish, then Confirm or CleanupDest + RestoreSource. What it checks:
the guest's own report (disks, sizes, boot counters, NIC MACs) on each side, the sha256 of
every file, the definition diff at each stage, and which files exist when.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hack import guest_domain as gd
from hack import guest_init
from hack.guest import Guest
from tests.e2e.test_qemu_agents import ready_status, run_task
from tests.support.agent_harness import AgentProcess, stop_agents, write_migration_key
from tests.support.checksum import file_disk_checksum

from vmresize.agent.hypervisor import domainxml, embedded
from vmresize.agent.vmfiles import disks
from vmresize.api import vmdisks

BOOT = 240.0  # TCG on 2 shared cores; a bound, not a benchmark
MACS = ("52:54:00:7e:57:11", "52:54:00:7e:57:12")
BASE_SEED = b"vmresize e2e: backing file data\n"
BIG = {"vcpus": 2, "memoryMiB": 192, "diskGiB": 1}
INSTANCE_DIR = "legacy/web-2"  # an admin's layout, not vmresize's
DEFINE = ("import sys; from vmresize.agent.hypervisor.libvirt_adapter import "
          "LibvirtHypervisor as H; h = H(sys.argv[1]); h.define_xml(open(sys.argv[2]).read());"
          " h.close()")


def sha(path: Path) -> str:
    """The disk checksum the agents report (an independent implementation)."""
    return file_disk_checksum(path)


def make_vm(root: Path, guest: Guest, name: str) -> tuple[str, list[gd.Disk]]:
    """The guest's files under ``root/INSTANCE_DIR`` and its domain XML."""
    d = root / INSTANCE_DIR
    d.mkdir(parents=True)
    base = d / "base.raw"
    with base.open("wb") as f:
        f.write(BASE_SEED)
        f.truncate(32 * 1024 * 1024)
    vda = gd.Disk(d / "root.qcow2", "vda", "qcow2", serial="vm-root")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(vda.path)], check=True, timeout=60)
    header = d / "header.qcow2"  # a qcow2 header naming a host file, as a guest could write
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F",
                    "raw", str(header), "1M"], check=True, timeout=60)
    vdb = gd.Disk(d / "data.raw", "vdb", "raw", serial="vm-data")
    with vdb.path.open("wb") as f:
        f.write(header.read_bytes())
        f.truncate(16 * 1024 * 1024)
        f.seek(guest_init.MARKER_OFFSET)
        f.write(b"VMRESIZE-GUEST boot=41 disk=vdb\n")
    header.unlink()
    vdc = gd.Disk(d / "ephemeral.qcow2", "vdc", "qcow2", serial="vm-eph")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(vdc.path), "8M"],
                   check=True, timeout=60)
    xml = gd.domain_xml(name, guest, disks=[vda, vdb, vdc], macs=MACS,
                        serial_log=d / "serial.log", memory_mib=128)
    return xml, [vda, vdb, vdc]


@pytest.fixture
def hosts(request: pytest.FixtureRequest, kubeconfig: Path, namespace: str, tmp_path: Path,
          guest: Guest) -> Iterator[tuple[AgentProcess, AgentProcess, str, list[gd.Disk]]]:
    """Two embedded-QEMU agents; the source's libvirt holds the admin's domain. With the
    parameter ``shared`` their storage roots are one directory (shared storage)."""
    embedded.become_subreaper()
    embedded.start_reaper(only="qemu-system")
    key = write_migration_key(tmp_path / "migration_key")
    agents = [AgentProcess(name=f"w-{uuid.uuid4().hex[:8]}", workdir=tmp_path / f"h{i}",
                           address=f"127.0.0.{i + 2}", kubeconfig=kubeconfig,
                           namespace=namespace, key_file=key, embedded=True)
              for i in range(2)]
    src = agents[0]
    src.storage_root.mkdir(parents=True)
    if getattr(request, "param", None) == "shared":
        agents[1].workdir.mkdir(parents=True)
        agents[1].storage_root.symlink_to(src.storage_root)
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    xml, disks = make_vm(src.storage_root, guest, name)
    (tmp_path / "admin.xml").write_text(xml)
    subprocess.run([sys.executable, "-c", DEFINE, src.uri, str(tmp_path / "admin.xml")],
                   check=True, timeout=300, capture_output=True)
    try:
        for a in agents:
            a.start()
        for a in agents:
            ready_status(a, kubeconfig)
        yield src, agents[1], name, disks
    finally:
        stop_agents(agents, kubeconfig)


def persistent_xml(agent: AgentProcess, name: str) -> str:
    """The domain's persistent definition as the agent's libvirt stores it."""
    return (agent.libvirt_root / "etc" / "qemu" / f"{name}.xml").read_text()


def booted(serial: Path, boots: int, agent: AgentProcess) -> gd.GuestLog:
    """Wait until the guest reports ``boots`` on its root disk on this serial log."""
    return gd.wait_serial(serial, lambda g: g.ready is not None
                          and g.disks.get("vda", {}).get("boot") == str(boots),
                          timeout=BOOT, alive=agent.alive, what=f"boot {boots}")


def move(kubeconfig: Path, namespace: str, src: AgentProcess, dst: AgentProcess, name: str,
         *, shared: bool = False) -> dict[str, Any]:
    """Adopt, start, Prepare, MigrateDisk, Finish; return what each side looked like."""
    adopted = run_task(kubeconfig, namespace, src, action="Adopt", domainName=name)["result"]
    assert adopted.get("unmovable") is None
    files = [vmdisks.VMDisk.model_validate(f) for f in adopted["disks"]]
    assert [(f.path.rsplit("/", 1)[1], f.role.value, f.format) for f in files] == [
        ("root.qcow2", "Disk", "qcow2"), ("data.raw", "Disk", "raw"),
        ("ephemeral.qcow2", "Disk", "qcow2"), ("base.raw", "Backing", "raw")]
    run_task(kubeconfig, namespace, src, action="RestoreSource", domainName=name,
             diskPath=files[0].path)  # start the adopted VM
    first = booted(src.storage_root / INSTANCE_DIR / "serial.log", 1, src)
    assert [first.nics[n]["mac"] for n in ("eth0", "eth1")] == list(MACS)
    before_xml = persistent_xml(src, name)

    tid = f"w-{uuid.uuid4().hex[:8]}"
    dest_dir = f"instances/{namespace}/web-2/{tid}"
    wanted = vmdisks.destination(files, dest_dir, tid)
    dump = [f.model_dump(by_alias=True, exclude_none=True) for f in wanted]
    arrived = [f.model_dump(by_alias=True, exclude_none=True)
               for f in vmdisks.arrived(wanted)]
    run_task(kubeconfig, namespace, dst, action="Prepare", transferId=tid, disks=arrived,
             diskPath=f"{dest_dir}/root.qcow2")
    dst_st = ready_status(dst, kubeconfig)
    sent = run_task(kubeconfig, namespace, src, action="MigrateDisk", domainName=name,
                    diskPath=files[0].path, transferId=tid, disks=dump,
                    powerOffTimeoutSeconds=120,
                    peer={"name": dst.name, "address": dst.address,
                          "port": dst_st["migrationEndpoint"]["port"],
                          "hostKey": dst_st["hostKey"]})["result"]
    src_log = gd.read_serial(src.storage_root / INSTANCE_DIR / "serial.log")
    assert src_log.acpi_power_button  # a graceful power-off the guest answered
    assert src_log.shutdown_done
    moved = [vmdisks.VMDisk.model_validate(f) for f in sent["disks"]]
    shas = {f.path: sha(src.storage_root / f.path) for f in files}
    assert {f.path: f.checksum for f in moved if f.path in shas} == shas
    assert sent["sharedStorage"] is shared
    landed = vmdisks.arrived(moved)
    fin = run_task(kubeconfig, namespace, dst, action="Finish", domainName=name,
                   flavor=BIG, transferId=tid, diskPath=f"{dest_dir}/root.qcow2",
                   disks=[f.model_dump(by_alias=True, exclude_none=True) for f in landed])
    assert (fin["result"]["vcpus"], fin["result"]["memoryMiB"]) == (2, 192)
    after = booted(dst.storage_root / dest_dir / "serial.log", 2, dst)
    assert (after.ready or {})["disks"] == "3"
    assert [after.nics[n]["mac"] for n in ("eth0", "eth1")] == list(MACS)
    assert after.disks["vdb"]["bytes"] == str(16 * 1024 * 1024)  # raw stays raw
    assert after.disks["vdb"]["boot"] == "43"
    return {"files": files, "wanted": wanted, "dest_dir": dest_dir, "shas": shas,
            "before_xml": before_xml, "after_xml": persistent_xml(dst, name)}


CHANGED = {"vcpu", "memory", "currentMemory", "devices/disk[vda]/source@file",
           "devices/disk[vdb]/source@file", "devices/disk[vdc]/source@file",
           "devices/serial/source@path", "devices/console/source@path"}


def test_adopted_vm_moves_whole_and_confirm_deletes_only_the_old_copy(
        hosts: tuple[AgentProcess, AgentProcess, str, list[gd.Disk]], kubeconfig: Path,
        namespace: str) -> None:
    src, dst, name, _ = hosts
    seen = move(kubeconfig, namespace, src, dst, name)
    changed = domainxml.diff(seen["before_xml"], seen["after_xml"])
    print("definition fields changed by the resize:", sorted(changed))
    assert changed == CHANGED
    unrelated = src.storage_root / "legacy" / "other-vm.img"
    unrelated.write_bytes(b"not part of the VM")
    old = [src.storage_root / f.path for f in seen["files"]]
    assert all(p.exists() for p in old)  # kept until Confirm
    run_task(kubeconfig, namespace, src, action="Confirm", domainName=name,
             diskPath=seen["files"][0].path,
             disks=[f.model_dump(by_alias=True, exclude_none=True) for f in seen["files"]])
    assert [p for p in old if p.exists()] == []
    assert not (src.storage_root / INSTANCE_DIR).exists()
    assert unrelated.read_bytes() == b"not part of the VM"
    assert not (src.libvirt_root / "etc" / "qemu" / f"{name}.xml").exists()
    # The old chain is gone; the new root disk reads the base that moved with it.
    root_rel = f"{seen['dest_dir']}/root.qcow2"
    assert disks.read_head(dst.storage_root, root_rel, len(BASE_SEED)) == BASE_SEED


def test_adopted_vm_reverted_comes_back_exactly(
        hosts: tuple[AgentProcess, AgentProcess, str, list[gd.Disk]], kubeconfig: Path,
        namespace: str) -> None:
    src, dst, name, _ = hosts
    seen = move(kubeconfig, namespace, src, dst, name)
    arrived = [f.model_dump(by_alias=True, exclude_none=True)
               for f in vmdisks.arrived(seen["wanted"])]
    run_task(kubeconfig, namespace, dst, action="CleanupDest", domainName=name,
             transferId=seen["wanted"][0].transfer_id, disks=arrived)
    assert not (dst.storage_root / seen["dest_dir"]).exists()
    assert {p: sha(src.storage_root / p) for p in seen["shas"]} == seen["shas"]
    run_task(kubeconfig, namespace, src, action="RestoreSource", domainName=name,
             diskPath=seen["files"][0].path)
    assert domainxml.diff(seen["before_xml"], persistent_xml(src, name)) == set()
    back = booted(src.storage_root / INSTANCE_DIR / "serial.log", 2, src)
    assert [back.nics[n]["mac"] for n in ("eth0", "eth1")] == list(MACS)
    assert disks.read_head(src.storage_root, seen["files"][0].path, len(BASE_SEED)) == BASE_SEED


@pytest.mark.parametrize("hosts", ["shared"], indirect=True)
def test_on_shared_storage_nothing_crosses_the_network(
        hosts: tuple[AgentProcess, AgentProcess, str, list[gd.Disk]], kubeconfig: Path,
        namespace: str) -> None:
    src, dst, name, _ = hosts
    seen = move(kubeconfig, namespace, src, dst, name, shared=True)
    assert "within the shared storage" in src.log_file.read_text()
    assert "Subsystem: vmresize-disk" not in dst.log_file.read_text()  # no SSH session
    run_task(kubeconfig, namespace, src, action="Confirm", domainName=name,
             diskPath=seen["files"][0].path,
             disks=[f.model_dump(by_alias=True, exclude_none=True) for f in seen["files"]])
    assert not (src.storage_root / INSTANCE_DIR).exists()
    left = sorted(p.name for p in (dst.storage_root / seen["dest_dir"]).iterdir())
    assert left == sorted(["root.qcow2", "data.raw", "ephemeral.qcow2", "base.raw",
                           "domain.xml", "serial.log", "root.qcow2.verified-all"])
