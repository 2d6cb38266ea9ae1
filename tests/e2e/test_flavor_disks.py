"""A flavor's ephemeral and swap disks on real QEMU, between two real agents.

Two agent processes (``tests.support.agent_harness``), each with its own ``qemu:///embed``
root, storage root and 127.0.0.x address; the test plays the operator through HostTasks
on a real kube-apiserver (so the flavor's ``ephemeralGiB``/``swapMiB`` cross the CRD). It
checks Spawn's three disks (in QEMU's own command line too), a resize that grows root and
ephemeral and recreates swap without sending it, and a revert that gives back exactly the
original files and definition.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.test_qemu_agents import qemu_args, ready_status, run_task
from tests.support.agent_harness import AgentProcess, stop_agents, write_migration_key

from vmresize.agent.hypervisor import domainxml, embedded
from vmresize.agent.vmfiles import disks
from vmresize.api import naming, vmdisks
from vmresize.api.vmdisks import DiskRole, DiskUse, VMDisk

MIB, GIB = 1024 ** 2, disks.GIB
SEED = "vmresize e2e: flavor disks"
SMALL = {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1, "ephemeralGiB": 1, "swapMiB": 32}
BIG = {"vcpus": 2, "memoryMiB": 128, "diskGiB": 2, "ephemeralGiB": 3, "swapMiB": 64}
SWAP_MAGIC = b"SWAPSPACE2"


@pytest.fixture
def agents(kubeconfig: Path, namespace: str,
           tmp_path: Path) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """Two embedded-QEMU agents; stopped (by PID), their VMs killed, after the test."""
    embedded.become_subreaper()
    embedded.start_reaper(only="qemu-system")
    key = write_migration_key(tmp_path / "migration_key")
    started = [AgentProcess(name=f"fd-{uuid.uuid4().hex[:8]}", workdir=tmp_path / f"h{i}",
                            address=f"127.0.0.{i + 2}", kubeconfig=kubeconfig,
                            namespace=namespace, key_file=key, embedded=True).start()
               for i in range(2)]
    try:
        yield started[0], started[1]
    finally:
        stop_agents(started, kubeconfig)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def persistent_xml(agent: AgentProcess, name: str) -> str:
    return (agent.libvirt_root / "etc" / "qemu" / f"{name}.xml").read_text()


def is_fresh_swap(path: Path, size: int) -> bool:
    data = path.read_bytes()
    return (len(data) == size and data[4096 - 10:4096] == SWAP_MAGIC
            and data[4096:].count(0) == size - 4096)


def wire(files: list[VMDisk]) -> list[dict[str, object]]:
    return [f.wire() for f in files]


def test_spawn_resize_and_revert_with_ephemeral_and_swap(
        agents: tuple[AgentProcess, AgentProcess], kubeconfig: Path, namespace: str) -> None:
    src, dst = agents
    ready_status(src, kubeconfig)
    dst_st = ready_status(dst, kubeconfig)
    dom, new_dom = naming.domain_name(namespace, "vm"), naming.domain_name(namespace, "vm", "r")
    rel = naming.disk_path(namespace, "vm", uuid.uuid4().hex)
    spawned = run_task(kubeconfig, namespace, src, action="Spawn", domainName=dom,
                       diskPath=rel, flavor=SMALL, seedPattern=SEED)["result"]
    files = [VMDisk.model_validate(f) for f in spawned["disks"]]
    assert [(f.use, f.format, f.target) for f in files] == [
        (None, "qcow2", "vda"), (DiskUse.EPHEMERAL, "qcow2", "vdb"), (DiskUse.SWAP, "raw", "vdc")]
    _, eph, swap = files
    assert disks.info(src.storage_root, eph.path, "qcow2").virtual_size == GIB
    assert is_fresh_swap(src.storage_root / swap.path, 32 * MIB)
    argv = " ".join(qemu_args(src, dom) or [])
    for f in files:  # QEMU really has the three disks, the flavor's by their serials
        assert str(src.storage_root / f.path) in argv
    assert "vmresize-ephemeral" in argv
    assert "vmresize-swap" in argv

    tid = f"f-{uuid.uuid4().hex[:8]}"
    dest_dir = naming.disk_path(namespace, "vm", uuid.uuid4().hex).rsplit("/", 1)[0]
    wanted = vmdisks.destination(files, dest_dir, tid)
    landing = vmdisks.arrived(wanted)
    run_task(kubeconfig, namespace, dst, action="Prepare", transferId=tid, disks=wire(landing),
             flavor=BIG)
    before_xml = persistent_xml(src, dom)
    sent = run_task(kubeconfig, namespace, src, action="MigrateDisk", domainName=dom,
                    diskPath=rel, transferId=tid, disks=wire(wanted), powerOffTimeoutSeconds=2,
                    peer={"name": dst.name, "address": dst.address,
                          "port": dst_st["migrationEndpoint"]["port"],
                          "hostKey": dst_st["hostKey"]})["result"]
    moved = [VMDisk.model_validate(f) for f in sent["disks"]]
    source_shas = {f.path: sha(src.storage_root / f.path) for f in files}  # powered off
    assert [f.checksum for f in moved if f.use is DiskUse.SWAP] == [None]
    assert not (dst.storage_root / landing[2].path).exists()  # the swap never crossed

    fin = run_task(kubeconfig, namespace, dst, action="Finish", domainName=new_dom,
                   flavor=BIG, transferId=tid, disks=wire(vmdisks.arrived(moved)))["result"]
    assert (fin["vcpus"], fin["memoryMiB"], fin["diskGiB"]) == (2, 128, 2)
    got = [VMDisk.model_validate(f) for f in fin["disks"]]
    n_root, n_eph, n_swap = [f for f in got if f.role is DiskRole.DISK]
    assert disks.info(dst.storage_root, n_root.path, "qcow2").virtual_size == 2 * GIB
    assert disks.info(dst.storage_root, n_eph.path, "qcow2").virtual_size == 3 * GIB
    assert is_fresh_swap(dst.storage_root / n_swap.path, 64 * MIB)
    assert disks.read_head(dst.storage_root, n_root.path, len(SEED)) == SEED.encode()
    argv = " ".join(qemu_args(dst, new_dom) or [])
    assert all(str(dst.storage_root / f.path) in argv for f in (n_root, n_eph, n_swap))
    changed = domainxml.diff(before_xml, persistent_xml(dst, new_dom))
    print("definition fields changed by the resize:", sorted(changed))
    assert changed == {
        "name", "vcpu", "memory", "currentMemory", "devices/disk[vda]/source@file",
        "devices/disk[vdb]/source@file", "devices/disk[vdc]/source@file",
        "devices/serial/source@path", "devices/console/source@path"}

    # Revert: the new copy goes entirely; the source is exactly what it was.
    run_task(kubeconfig, namespace, dst, action="CleanupDest", domainName=new_dom,
             transferId=tid, disks=wire(landing))
    assert qemu_args(dst, new_dom) is None
    assert [p for p in dst.storage_root.rglob("*") if p.is_file()] == []
    assert {f.path: sha(src.storage_root / f.path) for f in files} == source_shas
    restored = run_task(kubeconfig, namespace, src, action="RestoreSource", domainName=dom,
                        diskPath=rel, flavor=SMALL)["result"]
    assert (restored["powerState"], restored["vcpus"], restored["diskGiB"]) == ("Running", 1, 1)
    assert persistent_xml(src, dom) == before_xml
    assert qemu_args(src, dom) is not None
