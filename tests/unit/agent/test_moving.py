"""A whole VM moves between two storage roots: every file, its chain, its definition.

libvirt ``test:///default`` holds the domain, real ``qemu-img`` makes and re-links the
files, and the same-process transfer fake of ``test_executor`` carries them (the real
asyncssh service is tested in tests/integration/agent).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.agent_steps import LocalNetwork
from tests.support.checksum import file_disk_checksum

from vmresize.agent.errors import TaskRefusedError, UnmovableError
from vmresize.agent.hypervisor import domainxml
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.transfer.seam import StepProgress
from vmresize.agent.vmfiles import moving
from vmresize.api import vmdisks
from vmresize.api.hosttask import PeerHost
from vmresize.api.vmdisks import DiskRole, VMDisk

FIXTURE = (Path(__file__).parent / "data" / "domain-full.xml").read_text()
OLD_ROOT = "/var/lib/vmresize"
SRC_DIR = "instances/ns/web-1/6f1c2a1e"
DEST_DIR = "instances/ns/web-1/9b0d7e44"
MIB = 1024 * 1024
PEER = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused by the fake")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def sha(path: Path) -> str:
    """The disk checksum the agents report (an independent implementation)."""
    return file_disk_checksum(path)


def build_source(root: Path, tmp_path: Path) -> None:
    """The fixture's files under ``root``: a qcow2 root disk on a raw base image, a raw
    data disk whose first bytes are a qcow2 header, a qcow2 ephemeral disk, a config-drive
    image and UEFI variables."""
    inst = root / SRC_DIR
    inst.mkdir(parents=True)
    (root / "images").mkdir()
    base = root / "images" / "debian-12.raw"
    base.write_bytes(b"base image data\n".ljust(MIB, b"\0"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
             str(inst / "disk.qcow2"))
    (tmp_path / "host-file").write_bytes(b"host secret\n" * 100)
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(tmp_path / "host-file"), "-F", "raw",
             str(tmp_path / "trap.qcow2"), "1M")
    (inst / "data.raw").write_bytes((tmp_path / "trap.qcow2").read_bytes().ljust(2 * MIB,
                                                                             b"\0"))
    qemu_img("create", "-q", "-f", "qcow2", str(inst / "disk.eph0"), "4M")
    (inst / "disk.config").write_bytes(b"config drive".ljust(64 * 1024, b"\0"))
    (inst / "nvram.fd").write_bytes(b"uefi vars".ljust(128 * 1024, b"\0"))


@pytest.fixture
def hv() -> Iterator[LibvirtHypervisor]:
    h = LibvirtHypervisor("test:///default")
    yield h
    h.close()


@pytest.fixture
def world(hv: LibvirtHypervisor, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """Source root ``a`` with the VM's files and its domain defined, destination root ``b``."""
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    build_source(a, tmp_path)
    name = f"web-{uuid.uuid4().hex[:8]}"
    xml = FIXTURE.replace(OLD_ROOT, str(a)).replace("<domain type='kvm'>",
                                                     "<domain type='test'>")
    xml = xml.replace("<name>web-1</name>", f"<name>{name}</name>").replace(
        "6f1c2a1e-9a57-4c4b-9d1f-2f0c6f3b9e11", str(uuid.uuid4()))
    hv.define_xml(xml)
    yield a.resolve(), b.resolve(), name
    for n in (name, name + "-dest"):
        if hv.exists(n):
            hv.undefine(n)


def plan(hv: LibvirtHypervisor, root: Path, name: str) -> list[VMDisk]:
    """What the operator would send: the recorded files mapped onto the destination."""
    found = moving.capture(hv.export(name), name, root, []).files
    for f in found:
        f.size_bytes = (root / f.path).stat().st_size
    return vmdisks.destination(found, DEST_DIR, "t1")


def test_every_file_moves_verified_relinked_and_the_definition_keeps_all_else(
        hv: LibvirtHypervisor, world: tuple[Path, Path, str]) -> None:
    a, b, name = world
    net = LocalNetwork()
    src_xfer, dst_xfer = net.endpoint("a", a), net.endpoint("b", b)
    wanted = plan(hv, a, name)
    assert [f.role for f in wanted] == [DiskRole.DISK] * 3 + [
        DiskRole.MEDIA, DiskRole.BACKING, DiskRole.NVRAM, DiskRole.DEFINITION]
    (b / DEST_DIR).mkdir(parents=True)
    for f in vmdisks.arrived(wanted):  # Prepare
        dst_xfer.expect(f.transfer_id or "", f.path, vmdisks.bound(f))
    before = {f.path: sha(a / f.path) for f in wanted if f.role is not DiskRole.DEFINITION}

    captured = moving.capture(hv.export(name), name, a, wanted)
    seen: list[tuple[int, int]] = []
    sent = asyncio.run(moving.send(a, captured.files, transfer=src_xfer, peer=PEER,
                                   shared=False, progress=StepProgress(
                                       lambda done, total, rate: seen.append((done, total)))))
    assert {f.path: f.checksum for f in sent if f.role is not DiskRole.DEFINITION} == before
    # one count for the whole move, not each file's own
    assert seen[-1] == (sum(f.size_bytes for f in sent),) * 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    hv.undefine(name)  # the source is held aside while the copy runs on the destination

    landed = vmdisks.arrived(sent)
    asyncio.run(moving.verify(b, landed, dst_xfer))
    assert not moving.verified(b, landed)
    moving.mark_verified(b, landed)
    moving.relink(b, landed)
    assert moving.verified(b, landed)
    xml = moving.definition(b, landed, vcpus=4, memory_mib=4096, name=name + "-dest")
    hv.define_xml(xml)
    assert domainxml.diff(captured.xml, hv.export(name + "-dest")) == {
        "name", "vcpu", "memory", "currentMemory", "cpu/topology@sockets",
        "devices/disk[vda]/source@file", "devices/disk[vdb]/source@file",
        "devices/disk[vdc]/source@file", "devices/disk[sda]/source@file", "os/nvram",
        "devices/disk[vda]/backingStore/source@file",
        "devices/serial/source@path", "devices/console/source@path"}
    assert domainxml.inventory(xml)[0].backing[0].source == str(b / DEST_DIR / "debian-12.raw")
    out = subprocess.run(["qemu-img", "info", "-f", "qcow2", "--output=json",
                          str(b / DEST_DIR / "disk.qcow2")], capture_output=True, text=True,
                         check=True).stdout
    assert '"backing-filename": "debian-12.raw"' in out  # re-linked to the moved base
    assert sha(b / DEST_DIR / "data.raw") == before[f"{SRC_DIR}/data.raw"]  # raw stays raw

    moving.delete(a, captured.files)  # Confirm
    assert sorted(p.name for p in a.rglob("*") if p.is_file()) == ["debian-12.raw"]
    moving.delete(b, landed)  # CleanupDest (a revert)
    assert [p for p in b.rglob("*") if p.is_file()] == []


def test_what_cannot_move_is_refused_before_anything_happens(
        hv: LibvirtHypervisor, world: tuple[Path, Path, str]) -> None:
    a, _, name = world
    xml = hv.export(name).replace(
        "</devices>", "<hostdev mode='subsystem' type='pci' managed='yes'><source><address "
        "domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/></source></hostdev></devices>")
    hv.define_xml(xml)
    files = sorted(p for p in a.rglob("*"))
    with pytest.raises(UnmovableError, match="host device passed through"):
        moving.capture(hv.export(name), name, a, plan_stub())
    assert sorted(p for p in a.rglob("*")) == files  # not even the definition was written


def plan_stub() -> list[VMDisk]:
    return [VMDisk(path=f"{SRC_DIR}/disk.qcow2", peer_path="x", transfer_id="t")]


def test_a_disk_attached_since_it_was_recorded_is_refused(
        hv: LibvirtHypervisor, world: tuple[Path, Path, str]) -> None:
    a, _, name = world
    wanted = [f for f in plan(hv, a, name) if f.target != "vdc"]
    with pytest.raises(TaskRefusedError, match=r"changed since they were recorded: new "
                                          rf"\['{SRC_DIR}/disk.eph0'\]"):
        moving.capture(hv.export(name), name, a, wanted)


def test_on_shared_storage_files_are_copied_within_it(
        hv: LibvirtHypervisor, world: tuple[Path, Path, str]) -> None:
    a, _, name = world
    net = LocalNetwork()
    wanted = plan(hv, a, name)
    captured = moving.capture(hv.export(name), name, a, wanted)
    sent = asyncio.run(moving.send(a, captured.files, transfer=net.endpoint(
        "a", a), peer=PEER, shared=True))
    landed = vmdisks.arrived(sent)
    asyncio.run(moving.verify(a, landed, net.endpoint("a", a)))
    assert all((a / f.path).is_file() for f in landed)
    assert sha(a / DEST_DIR / "disk.eph0") == sha(a / SRC_DIR / "disk.eph0")
