"""The executor moves a whole adopted VM when its tasks list the files (``spec.disks``).

Plays the operator with the pure mappings it uses (``vmdisks.destination``/``arrived``):
Adopt on ``a``, Prepare on ``b``, MigrateDisk on ``a``, Finish on ``b``, then Confirm or
CleanupDest. libvirt ``test:///default``, real ``qemu-img``, the same-process transfer fake.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.agent_steps import LocalNetwork, allow_all
from tests.unit.agent.test_moving import DEST_DIR, FIXTURE, OLD_ROOT, build_source, sha

from vmresize.agent.errors import StepError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor import domainxml
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.api import vmdisks
from vmresize.api.hosttask import HostTaskSpec, PeerHost, TaskAction, TaskFlavor
from vmresize.api.vmdisks import DiskRole

A = TaskAction
PEER = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused by the fake")
BIG = TaskFlavor(vcpus=4, memory_mib=4096, disk_gib=1)


def spec(host: str, action: TaskAction, **kw: object) -> HostTaskSpec:
    return HostTaskSpec.model_validate({"host": host, "action": action, "owner": "ns/r",
                                        "instance": "ns/web-1", **kw})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Executor, Executor, str]]:
    hv = LibvirtHypervisor("test:///default")
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    build_source(a, tmp_path)
    name = f"web-{uuid.uuid4().hex[:8]}"
    xml = FIXTURE.replace(OLD_ROOT, str(a.resolve())).replace(
        "<domain type='kvm'>", "<domain type='test'>").replace(
        "<name>web-1</name>", f"<name>{name}</name>").replace(
        "6f1c2a1e-9a57-4c4b-9d1f-2f0c6f3b9e11", str(uuid.uuid4()))
    hv.define_xml(xml)
    hv.start(name)
    net = LocalNetwork()
    ex = [Executor(host=h, hypervisor=hv, storage_root=r, fence=allow_all,
                   transfer=net.endpoint(h, r.resolve())) for h, r in (("a", a), ("b", b))]
    yield ex[0], ex[1], name
    for n in (name, name + "-resize"):
        if hv.exists(n):
            hv.destroy(n)
            hv.undefine(n)
    hv.close()


async def test_an_adopted_vm_moves_whole_then_is_confirmed_or_reverted(
        setup: tuple[Executor, Executor, str]) -> None:
    a, b, name = setup
    adopted = (await a.run(spec("a", A.ADOPT, domain_name=name))).result
    assert adopted.unmovable is None
    files = adopted.disks or []
    assert [f.role for f in files] == [DiskRole.DISK] * 3 + [DiskRole.MEDIA, DiskRole.BACKING,
                                                            DiskRole.NVRAM]
    root_rel = files[0].path
    wanted = vmdisks.destination(files, DEST_DIR, "t1")
    await b.run(spec("b", A.PREPARE, disks=vmdisks.arrived(wanted), transfer_id="t1",
                     disk_path=f"{DEST_DIR}/disk.qcow2"))
    before = {f.path: sha(a.root / f.path) for f in files}
    captured_xml = a.hv.export(name)

    moved = (await a.run(spec("a", A.MIGRATE_DISK, domain_name=name, disk_path=root_rel,
                              peer=PEER, transfer_id="t1", disks=wanted,
                              power_off_timeout_seconds=0))).result
    assert not a.hv.exists(name)  # off and held aside until Confirm or revert
    assert moved.shared_storage is False
    sent = moved.disks or []
    assert {f.path: f.checksum for f in sent if f.role is not DiskRole.DEFINITION} == before
    assert moved.checksum == before[root_rel]

    landed = vmdisks.arrived(sent)
    fin = (await b.run(spec("b", A.FINISH, domain_name=name + "-resize", flavor=BIG,
                            transfer_id="t1", disks=landed,
                            disk_path=f"{DEST_DIR}/disk.qcow2"))).result
    assert (fin.vcpus, fin.memory_mib, fin.power_state) == (4, 4096, "Running")
    changed = domainxml.diff(captured_xml, b.hv.export(name + "-resize"))
    assert changed == {
        "name", "vcpu", "memory", "currentMemory", "cpu/topology@sockets",
        "devices/disk[vda]/source@file", "devices/disk[vdb]/source@file",
        "devices/disk[vdc]/source@file", "devices/disk[sda]/source@file", "os/nvram",
        "devices/disk[vda]/backingStore/source@file",
        "devices/serial/source@path", "devices/console/source@path"}
    assert all(f.name in {"disk.qcow2", "data.raw", "disk.eph0", "disk.config",
                          "debian-12.raw", "nvram.fd", "domain.xml", "disk.qcow2.verified-all"}
               for f in (b.root / DEST_DIR).iterdir())

    # The moved VM moves again (back to a): what the operator recorded is enough.
    back = vmdisks.destination(landed, "instances/ns/web-1/second", "t2")
    await a.run(spec("a", A.PREPARE, disks=vmdisks.arrived(back), transfer_id="t2"))
    again = (await b.run(spec("b", A.MIGRATE_DISK, domain_name=name + "-resize",
                              peer=PEER.model_copy(update={"name": "a"}),
                              disk_path=landed[0].path, transfer_id="t2", disks=back,
                              power_off_timeout_seconds=0))).result
    assert [f.role for f in again.disks or []].count(DiskRole.DEFINITION) == 1
    assert (a.root / "instances/ns/web-1/second/domain.xml").is_file()

    # Revert: the destination's copy goes entirely.
    await b.run(spec("b", A.CLEANUP_DEST, domain_name=name + "-resize", transfer_id="t1",
                     disks=vmdisks.arrived(wanted)))
    assert [p for p in b.root.rglob("*") if p.is_file()] == []
    assert {f.path: sha(a.root / f.path) for f in files} == before  # the source untouched

    # Confirm (of the same copy, for the test): every file of the old copy goes, the
    # shared base image in images/ stays.
    await a.run(spec("a", A.CONFIRM, domain_name=name, disks=files, disk_path=root_rel))
    left = sorted(str(p.relative_to(a.root)) for p in a.root.rglob("*") if p.is_file())
    assert [p for p in left if "/second/" not in p] == ["images/debian-12.raw"]


async def test_a_vm_with_a_passthrough_device_is_refused_while_it_runs(
        setup: tuple[Executor, Executor, str]) -> None:
    a, _, name = setup
    files = (await a.run(spec("a", A.ADOPT, domain_name=name))).result.disks or []
    xml = a.hv.export(name).replace(
        "</devices>", "<hostdev mode='subsystem' type='pci' managed='yes'><source><address "
        "domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/></source></hostdev></devices>")
    a.hv.define_xml(xml)  # persistent config only; the running domain is not touched
    again = (await a.run(spec("a", A.ADOPT, domain_name=name))).result
    assert again.unmovable == [f"{name} cannot move: host device passed through "
                               "(<hostdev type='pci'> bus=0x3b domain=0x0000 function=0x1 "
                               "slot=0x00)"]
    for disks in (vmdisks.destination(files, DEST_DIR, "t1"), []):
        with pytest.raises(StepError, match="host device passed through") as err:
            await a.run(spec("a", A.MIGRATE_DISK, domain_name=name, disk_path=files[0].path,
                             peer=PEER, transfer_id="t1", disks=disks,
                             power_off_timeout_seconds=0))
        assert not err.value.retryable
        assert a.hv.state(name) == PowerState.RUNNING
    assert not (a.root / (files[0].path + ".poweroff")).exists()


HUGE = "<memoryBacking><hugepages><page size='1' unit='G'/></hugepages></memoryBacking>"


@pytest.mark.parametrize("pre_copy", [False, True], ids=["offline", "pre-copy"])
async def test_a_flavor_the_rewrite_would_refuse_is_refused_before_the_power_off(
        setup: tuple[Executor, Executor, str], pre_copy: bool) -> None:
    a, b, name = setup
    files = (await a.run(spec("a", A.ADOPT, domain_name=name))).result.disks or []
    # The definition backs its memory with 1 GiB pages: 1536 MiB is not whole pages.
    a.hv.define_xml(a.hv.export(name).replace("<vcpu", HUGE + "<vcpu", 1))
    wanted = vmdisks.destination(files, DEST_DIR, "t1", pre_copy=pre_copy,
                                 virtual_bytes=1 << 30 if pre_copy else 0)
    await b.run(spec("b", A.PREPARE, disks=vmdisks.arrived(wanted), transfer_id="t1"))
    before = {f.path: sha(a.root / f.path) for f in files}
    odd = TaskFlavor(vcpus=2, memory_mib=1536, disk_gib=1)
    with pytest.raises(StepError, match="1536 MiB of initial memory is not a whole number of "
                       "the 1024 MiB huge pages") as err:
        await a.run(spec("a", A.MIGRATE_DISK, domain_name=name, disk_path=files[0].path,
                         peer=PEER, transfer_id="t1", disks=wanted, flavor=odd,
                         power_off_timeout_seconds=0))
    assert "refused before any power-off" in str(err.value)
    assert not err.value.retryable
    # Untouched: running, defined, nothing beside its disks, no byte of them changed.
    assert a.hv.state(name) == PowerState.RUNNING
    assert not (a.root / (files[0].path + ".poweroff")).exists()
    assert not (a.root / (files[0].path + ".precopy")).exists()
    assert {f.path: sha(a.root / f.path) for f in files} == before
    assert not any(p.name.endswith(".xfer") or p.name.endswith(".partial")
                   for p in b.root.rglob("*"))
    # A size in whole pages passes the check and moves.
    fits = TaskFlavor(vcpus=2, memory_mib=2048, disk_gib=1)
    moved = await a.run(spec("a", A.MIGRATE_DISK, domain_name=name, disk_path=files[0].path,
                             peer=PEER, transfer_id="t1", disks=wanted, flavor=fits,
                             power_off_timeout_seconds=0))
    assert moved.result.checksum == before[files[0].path]
    assert not a.hv.exists(name)


async def test_revert_redefines_a_source_that_was_undefined_from_its_capture(
        setup: tuple[Executor, Executor, str]) -> None:
    a, b, name = setup
    files = (await a.run(spec("a", A.ADOPT, domain_name=name))).result.disks or []
    before = a.hv.export(name)
    wanted = vmdisks.destination(files, DEST_DIR, "t1")
    await b.run(spec("b", A.PREPARE, disks=vmdisks.arrived(wanted), transfer_id="t1"))
    await a.run(spec("a", A.MIGRATE_DISK, domain_name=name, disk_path=files[0].path,
                     peer=PEER, transfer_id="t1", disks=wanted, power_off_timeout_seconds=0))
    (a.root / (files[0].path + ".held.xml")).unlink()  # the held definition is lost too
    restored = (await a.run(spec("a", A.RESTORE_SOURCE, domain_name=name,
                                 disk_path=files[0].path))).result
    assert restored.power_state == "Running"
    assert domainxml.diff(before, a.hv.export(name)) == set()
    a.hv.destroy(name)
    a.hv.undefine(name)
    with pytest.raises(StepError, match="no definition was captured"):
        await a.run(spec("a", A.RESTORE_SOURCE, domain_name=name, disk_path="elsewhere.qcow2"))


async def test_a_same_host_resize_keeps_the_uuid_and_reverts_exactly(
        setup: tuple[Executor, Executor, str]) -> None:
    a, _, name = setup
    files = (await a.run(spec("a", A.ADOPT, domain_name=name))).result.disks or []
    before = a.hv.export(name)
    wanted = vmdisks.destination(files, DEST_DIR, "t1")
    await a.run(spec("a", A.PREPARE, disks=vmdisks.arrived(wanted), transfer_id="t1"))
    here = PEER.model_copy(update={"name": "a"})
    sent = (await a.run(spec("a", A.MIGRATE_DISK, domain_name=name, disk_path=files[0].path,
                             peer=here, transfer_id="t1", disks=wanted,
                             power_off_timeout_seconds=0))).result
    assert sent.shared_storage is True  # the same root: copied within it
    assert not a.hv.exists(name)  # stepped aside for the new definition's UUID
    await a.run(spec("a", A.FINISH, domain_name=name + "-resize", flavor=BIG,
                     transfer_id="t1", disks=vmdisks.arrived(sent.disks or [])))
    new = a.hv.export(name + "-resize")
    assert domainxml.flatten(new)["uuid"] == domainxml.flatten(before)["uuid"]
    await a.run(spec("a", A.CLEANUP_DEST, domain_name=name + "-resize", transfer_id="t1",
                     disks=vmdisks.arrived(wanted)))
    await a.run(spec("a", A.RESTORE_SOURCE, domain_name=name, disk_path=files[0].path))
    assert domainxml.diff(before, a.hv.export(name)) == set()
    assert a.hv.state(name) == PowerState.RUNNING


async def test_pre_copy_where_the_driver_has_no_block_layer_moves_offline(
        setup: tuple[Executor, Executor, str]) -> None:
    """The test driver cannot make overlays: a pre-copy task moves the offline way, and the
    destination drops the overlays it was told to expect (none arrived)."""
    a, b, name = setup
    files = (await a.run(spec("a", A.ADOPT, domain_name=name))).result.disks or []
    wanted = vmdisks.destination(files, DEST_DIR, "t1", pre_copy=True, virtual_bytes=1 << 40)
    overlays = [f for f in wanted if f.role is DiskRole.OVERLAY]
    assert len(overlays) == 3  # one per guest disk, none for media or backing files
    # A whole disk per overlay (1 TiB here) is not reserved: the space check passes.
    await b.run(spec("b", A.PREPARE, disks=vmdisks.arrived(wanted), transfer_id="t1",
                     disk_path=f"{DEST_DIR}/disk.qcow2"))
    expected = b.transfer.net.expected["b"]  # type: ignore[attr-defined]
    assert {f.transfer_id for f in overlays} <= set(expected)
    moved = (await a.run(spec("a", A.MIGRATE_DISK, domain_name=name, disk_path=files[0].path,
                              peer=PEER, transfer_id="t1", disks=wanted,
                              power_off_timeout_seconds=0))).result
    sent = moved.disks or []
    assert DiskRole.OVERLAY not in {f.role for f in sent}
    assert not list(a.root.rglob("*.vmresize-overlay.qcow2"))
    await b.run(spec("b", A.FINISH, domain_name=name + "-resize", flavor=BIG,
                     transfer_id="t1", disks=vmdisks.arrived(sent),
                     disk_path=f"{DEST_DIR}/disk.qcow2"))
    assert expected == {}  # every expected transfer forgotten, the overlays' too
