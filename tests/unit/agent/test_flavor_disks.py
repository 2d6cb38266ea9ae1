"""A flavor's ephemeral and swap disks through Spawn, a resize, Confirm and revert.

libvirt ``test:///default`` (one driver, two storage roots), real ``qemu-img`` and
``mkswap``, the same-process transfer fake; the test plays the operator with the pure
mappings it uses (``vmdisks.destination``/``arrived``). The same flow on real QEMU, with
agent processes, is in ``tests/e2e/test_flavor_disks.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.support.agent_steps import names, spec

from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor import domainxml
from vmresize.agent.vmfiles import disks
from vmresize.api import vmdisks
from vmresize.api.hosttask import PeerHost, TaskAction, TaskFlavor, TaskResult
from vmresize.api.vmdisks import DiskRole, DiskUse, VMDisk

A = TaskAction
MIB, GIB = 1024 ** 2, disks.GIB
PEER = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused by the fake")
SMALL = TaskFlavor(vcpus=1, memory_mib=64, disk_gib=1, ephemeral_gib=1, swap_mib=32)
BIG = TaskFlavor(vcpus=2, memory_mib=128, disk_gib=2, ephemeral_gib=3, swap_mib=64)
SWAP_MAGIC = b"SWAPSPACE2"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def virtual(ex: Executor, f: VMDisk) -> int:
    return disks.info(ex.root, f.path, f.format).virtual_size


def is_swap(path: Path, size: int) -> bool:
    """A fresh swap area: the signature at the end of the first 4 KiB page, no data."""
    data = path.read_bytes()
    return (len(data) == size and data[4096 - 10:4096] == SWAP_MAGIC
            and data[4096:].count(0) == size - 4096)


def by_target(xml: str) -> dict[str, tuple[str | None, str | None, str | None]]:
    return {d.target: (d.source, d.format, d.serial) for d in domainxml.inventory(xml)}


async def spawn(a: Executor, uid: str, flavor: TaskFlavor) -> tuple[str, TaskResult]:
    dom, rel, _, _ = names(uid)
    out = await a.run(spec("a", A.SPAWN, domain_name=dom, disk_path=rel, flavor=flavor,
                           seed_pattern="flavor disks"))
    return dom, out.result


async def resize(a: Executor, b: Executor, uid: str, dom: str, files: list[VMDisk],
                 flavor: TaskFlavor) -> tuple[list[VMDisk], list[VMDisk], TaskResult]:
    """Prepare, MigrateDisk, Finish; returns what Prepare/CleanupDest get, what was sent
    and Finish's result."""
    dest_dir = names(uid)[3].rsplit("/", 1)[0]
    wanted = vmdisks.destination(files, dest_dir, uid)
    landing = vmdisks.arrived(wanted)
    await b.run(spec("b", A.PREPARE, disks=landing, transfer_id=uid))
    sent = (await a.run(spec("a", A.MIGRATE_DISK, domain_name=dom, disk_path=files[0].path,
                             peer=PEER, transfer_id=uid, disks=wanted,
                             power_off_timeout_seconds=0))).result.disks or []
    fin = (await b.run(spec("b", A.FINISH, domain_name=dom + "-resize", flavor=flavor,
                            transfer_id=uid, disks=vmdisks.arrived(sent)))).result
    return landing, sent, fin


async def test_spawn_makes_the_ephemeral_and_swap_disks_of_the_flavor(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    dom, res = await spawn(a, agent_uid, SMALL)
    files = res.disks or []
    assert [(f.use, f.format, f.target) for f in files] == [
        (None, "qcow2", "vda"), (DiskUse.EPHEMERAL, "qcow2", "vdb"), (DiskUse.SWAP, "raw", "vdc")]
    root, eph, swap = files
    assert res.disk_gib == 1
    assert virtual(a, root) == GIB
    assert virtual(a, eph) == GIB
    assert disks.read_head(a.root, eph.path, 16) == bytes(16)  # blank: the guest formats it
    assert is_swap(a.root / swap.path, 32 * MIB)
    assert (a.root / swap.path).stat().st_blocks * 512 < MIB  # sparse
    assert {f.path for f in files} == {str(p.relative_to(a.root)) for p in
                                       (a.root / root.path).parent.iterdir() if p.is_file()
                                       and p.suffix != ".log"}
    assert by_target(a.hv.export(dom)) == {
        "vda": (str(a.root / root.path), "qcow2", None),
        "vdb": (str(a.root / eph.path), "qcow2", "vmresize-ephemeral"),
        "vdc": (str(a.root / swap.path), "raw", "vmresize-swap")}
    again = (await a.run(spec("a", A.SPAWN, domain_name=dom, disk_path=root.path,
                              flavor=SMALL))).result  # resumed: nothing made twice
    assert again.disks == files


async def test_a_resize_grows_root_and_ephemeral_recreates_swap_and_reverts_exactly(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, res = await spawn(a, agent_uid, SMALL)
    files = res.disks or []
    (a.root / files[2].path).write_bytes(b"guest swap data" * 1000)  # what a guest leaves
    before_xml = a.hv.export(dom)
    before = {f.path: sha(a.root / f.path) for f in files}
    landing, sent, fin = await resize(a, b, agent_uid, dom, files, BIG)

    # The swap was never sent: no checksum, and nothing of its content on b.
    swap_sent = [f for f in sent if f.use is DiskUse.SWAP]
    assert [(f.checksum, f.size_bytes) for f in swap_sent] == [(None, 0)]
    root, eph, swap = [f for f in fin.disks or [] if f.role is DiskRole.DISK]
    assert (fin.vcpus, fin.memory_mib, fin.disk_gib, fin.power_state) == (2, 128, 2, "Running")
    assert virtual(b, root) == 2 * GIB
    assert virtual(b, eph) == 3 * GIB
    assert is_swap(b.root / swap.path, 64 * MIB)  # recreated at the new size
    assert disks.read_head(b.root, root.path, 12) == b"flavor disks"
    new_xml = b.hv.export(dom + "-resize")
    assert domainxml.diff(before_xml, new_xml) == {
        "name", "vcpu", "memory", "currentMemory", "devices/disk[vda]/source@file",
        "devices/disk[vdb]/source@file", "devices/disk[vdc]/source@file",
        "devices/serial/source@path", "devices/console/source@path"}
    assert by_target(new_xml)["vdc"] == (str(b.root / swap.path), "raw", "vmresize-swap")

    # Revert: the destination's copy goes entirely, the source comes back exactly.
    await b.run(spec("b", A.CLEANUP_DEST, domain_name=dom + "-resize", transfer_id=agent_uid,
                     disks=landing))
    assert [p for p in b.root.rglob("*") if p.is_file()] == []
    restored = (await a.run(spec("a", A.RESTORE_SOURCE, domain_name=dom,
                                 disk_path=files[0].path, flavor=SMALL))).result
    assert restored.power_state == "Running"
    assert a.hv.export(dom) == before_xml
    assert {f.path: sha(a.root / f.path) for f in files} == before


async def test_a_flavor_without_swap_drops_it_and_one_with_ephemeral_adds_it(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, res = await spawn(a, agent_uid, SMALL.model_copy(update={"ephemeral_gib": 0}))
    files = res.disks or []
    assert [(f.use, f.target) for f in files] == [(None, "vda"), (DiskUse.SWAP, "vdb")]
    gains = TaskFlavor(vcpus=1, memory_mib=64, disk_gib=1, ephemeral_gib=2, swap_mib=0)
    landing, _, fin = await resize(a, b, agent_uid, dom, files, gains)
    got = [f for f in fin.disks or [] if f.role is DiskRole.DISK]
    assert [(f.use, f.target, f.format) for f in got] == [(None, "vda", "qcow2"),
                                                         (DiskUse.EPHEMERAL, "vdb", "qcow2")]
    assert virtual(b, got[1]) == 2 * GIB
    assert not (b.root / landing[1].path).exists()  # the swap: neither sent nor made
    assert by_target(b.hv.export(dom + "-resize")) == {
        "vda": (str(b.root / got[0].path), "qcow2", None),
        "vdb": (str(b.root / got[1].path), "qcow2", "vmresize-ephemeral")}

    # Confirm deletes every file of the old copy, the swap included.
    await a.run(spec("a", A.CONFIRM, domain_name=dom, disks=files, disk_path=files[0].path))
    assert [p for p in a.root.rglob("*") if p.is_file()] == []
    # The resized VM moves again with its new ephemeral disk, known by its serial.
    listed = (await b.run(spec("b", A.ADOPT, domain_name=dom + "-resize"))).result.disks
    assert [(f.path, f.use) for f in listed or []] == [(f.path, f.use) for f in got]


async def test_smaller_sizes_on_finish_leave_the_disks_as_they_are(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, res = await spawn(a, agent_uid, BIG)
    files = res.disks or []
    _, _, fin = await resize(a, b, agent_uid, dom, files, SMALL)
    root, eph, swap = [f for f in fin.disks or [] if f.role is DiskRole.DISK]
    assert (virtual(b, root), virtual(b, eph)) == (2 * GIB, 3 * GIB)  # never shrunk
    assert is_swap(b.root / swap.path, 32 * MIB)  # swap is made anew: any size goes
