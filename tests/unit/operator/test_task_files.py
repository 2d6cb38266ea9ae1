"""Tasks carry the VM's files (and a new VM's NICs) as each step needs them."""

from __future__ import annotations

from datetime import UTC, datetime

from vmresize.api import nics, vmdisks
from vmresize.api.flavor import FlavorSpec
from vmresize.api.host import Host, HostStatus, MigrationEndpoint
from vmresize.api.hosttask import TaskAction, TaskFlavor
from vmresize.api.instance import Instance, InstanceSpec, InstanceStatus
from vmresize.api.resize import Effect, ResizePhase, VMResize, VMResizeSpec, VMResizeStatus
from vmresize.api.vmdisks import DiskRole, DiskUse, VMDisk
from vmresize.operator.decisions.tasks import instance_task, resize_task
from vmresize.operator.reconcile import effects

A = TaskAction
SRC = "legacy/web"
DEST_DISK = "instances/ns/vm/aaaaaaaa/disk.qcow2"
FILES = [VMDisk(path=f"{SRC}/root.qcow2", format="qcow2", target="vda", size_bytes=10,
                backing=f"{SRC}/base.raw"),
         VMDisk(path=f"{SRC}/data.raw", target="vdb", size_bytes=20),
         VMDisk(path=f"{SRC}/base.raw", role=DiskRole.BACKING, size_bytes=30)]


def world(sent: list[VMDisk] | None = None) -> tuple[VMResize, Instance, Host]:
    r = VMResize(metadata={"name": "r1", "namespace": "ns", "uid": "aaaaaaaa-1111"},
                 spec=VMResizeSpec(instance_name="vm"),
                 status=VMResizeStatus(phase=ResizePhase.PREPARING, source_host="a",
                                       dest_host="b", dest_domain_name="ns.vm",
                                       dest_disk_path=DEST_DISK, source_disks=sent))
    inst = Instance(metadata={"name": "vm", "namespace": "ns", "uid": "bbbbbbbb-2222"},
                    spec=InstanceSpec(flavor="small", interfaces=[nics.Interface()]),
                    status=InstanceStatus(host="a", domain_name="web", disk_gib=1,
                                          disk_path=f"{SRC}/root.qcow2", disks=FILES))
    dest = Host(metadata={"name": "b"}, status=HostStatus(
        migration_endpoint=MigrationEndpoint(address="127.0.0.2", port=2222),
        host_key="ssh-ed25519 AAAA"))
    return r, inst, dest


def build(action: TaskAction, host: str, sent: list[VMDisk] | None = None) -> list[VMDisk]:
    r, inst, dest = world(sent)
    return resize_task(action, host, 0, namespace="sys", resize=r, inst=inst,
                       new=FlavorSpec(vcpus=2, memory_mib=2048, disk_gib=2),
                       old=TaskFlavor(vcpus=1, memory_mib=1024, disk_gib=1),
                       dest=dest).spec.disks


def test_every_step_gets_the_files_in_its_own_terms() -> None:
    here = "instances/ns/vm/aaaaaaaa"
    prep = build(A.PREPARE, "b")
    assert [(f.path, f.transfer_id) for f in prep] == [
        (f"{here}/root.qcow2", "aaaaaaaa-1111-0"), (f"{here}/data.raw", "aaaaaaaa-1111-1"),
        (f"{here}/base.raw", "aaaaaaaa-1111-2"), (f"{here}/domain.xml", "aaaaaaaa-1111-def")]
    mig = build(A.MIGRATE_DISK, "a")
    assert [(f.path, f.peer_path) for f in mig[:3]] == [(f.path, p.path)
                                                        for f, p in zip(FILES, prep, strict=False)]
    assert build(A.CLEANUP_DEST, "b") == prep
    assert build(A.CONFIRM, "a") == FILES
    assert build(A.RESTORE_SOURCE, "a") == []
    assert build(A.FINISH, "b") == []  # nothing was sent yet: nothing to verify
    sent = [f.model_copy(update={"checksum": f"{i:064x}"}) for i, f in enumerate(mig)]
    fin = build(A.FINISH, "b", sent)
    assert [(f.path, f.checksum) for f in fin] == [(p.path, f"{i:064x}")
                                                   for i, p in enumerate(prep)]
    assert fin[0].backing == f"{here}/base.raw"


def test_an_instance_without_a_file_list_gets_single_disk_tasks() -> None:
    r, inst, dest = world()
    assert inst.status is not None
    inst.status.disks = []
    spec = resize_task(A.MIGRATE_DISK, "a", 0, namespace="sys", resize=r, inst=inst,
                       new=FlavorSpec(vcpus=2, memory_mib=2048, disk_gib=2), old=None,
                       dest=dest).spec
    assert spec.disks == []
    assert spec.disk_path == f"{SRC}/root.qcow2"


def test_spawn_defines_the_nics_with_macs_generated_once() -> None:
    _, inst, _ = world()
    a = instance_task(A.SPAWN, "a", namespace="sys", inst=inst,
                      flavor=FlavorSpec(vcpus=1, memory_mib=64, disk_gib=1)).spec
    b = instance_task(A.SPAWN, "a", namespace="sys", inst=inst,
                      flavor=FlavorSpec(vcpus=1, memory_mib=64, disk_gib=1)).spec
    assert [i.mac for i in a.interfaces] == [nics.generated_mac(inst.uid, 0)]
    assert a.interfaces == b.interfaces
    destroy = instance_task(A.DESTROY, "a", namespace="sys", inst=inst, flavor=None).spec
    assert destroy.disks == FILES
    assert vmdisks.bound(FILES[0]) > 10


def test_flavor_disks_reach_spawn_finish_cleanup_and_the_instance_after_confirm() -> None:
    swap = VMDisk(path=f"{SRC}/disk.swap", target="vdc", use=DiskUse.SWAP)
    r, inst, dest = world()
    assert inst.status is not None
    inst.status.disks = [*FILES, swap]
    new = FlavorSpec(vcpus=2, memory_mib=2048, disk_gib=2, ephemeral_gib=3, swap_mib=256)
    spawn = instance_task(A.SPAWN, "a", namespace="sys", inst=inst, flavor=new).spec
    assert spawn.flavor is not None
    assert (spawn.flavor.ephemeral_gib, spawn.flavor.swap_mib) == (3, 256)

    def files(action: TaskAction, sent: list[VMDisk] | None = None) -> list[VMDisk]:
        r.status = (r.status or VMResizeStatus()).model_copy(update={"source_disks": sent})
        return resize_task(action, "b", 0, namespace="sys", resize=r, inst=inst, new=new,
                           old=None, dest=dest).spec.disks

    prep = files(A.PREPARE)
    assert [f.use for f in prep] == [None, None, None, DiskUse.SWAP, None]
    cleanup = files(A.CLEANUP_DEST)
    # A revert deletes the ephemeral disk Finish may have made for the new flavor, too.
    assert cleanup[:-1] == prep
    assert (cleanup[-1].path, cleanup[-1].use) == (
        "instances/ns/vm/aaaaaaaa/disk.local", DiskUse.EPHEMERAL)
    assert files(A.FINISH, files(A.MIGRATE_DISK))[0].transfer_id == "aaaaaaaa-1111-0"

    # After Confirm the Instance lists the files the destination has: the new ephemeral
    # disk too (a later resize would otherwise refuse the VM's changed file list).
    assert r.status is not None
    r.status.source_disks = files(A.MIGRATE_DISK)
    change = effects.instance_change(Effect(kind="UpdateInstance", placement="dest"),
                                     r.status, new, datetime.now(UTC))
    after = change(inst.status).disks
    assert [f.path for f in after] == [f.path for f in cleanup]
