"""Which disks a flavor grows, creates, recreates or drops (Nova's semantics, pure)."""

from __future__ import annotations

import pytest

from vmresize.api.flavordisks import GIB, MIB, SERIALS, not_copied, plan, use_of_serial
from vmresize.api.hosttask import TaskFlavor
from vmresize.api.vmdisks import DiskRole, DiskUse, VMDisk

D = "instances/ns/vm/abc"
ROOT = VMDisk(path=f"{D}/disk.qcow2", format="qcow2", target="vda")
EPH = VMDisk(path=f"{D}/disk.local", format="qcow2", target="vdb", use=DiskUse.EPHEMERAL)
SWAP = VMDisk(path=f"{D}/disk.swap", format="raw", target="vdc", use=DiskUse.SWAP)
DATA = VMDisk(path=f"{D}/data.raw", format="raw", target="vdd")
BACKING = VMDisk(path="images/base.raw", role=DiskRole.BACKING)


def sizes(disk: int = 1, eph: int = 0, swap: int = 0) -> TaskFlavor:
    return TaskFlavor(vcpus=1, memory_mib=64, disk_gib=disk, ephemeral_gib=eph, swap_mib=swap)


def test_spawn_gets_ephemeral_then_swap_after_the_root_disk() -> None:
    p = plan([ROOT], sizes(disk=2, eph=3, swap=512))
    assert [(g.disk.path, g.size_bytes) for g in p.grow] == [(ROOT.path, 2 * GIB)]
    assert [(c.disk.path, c.disk.format, c.disk.target, c.disk.use, c.size_bytes)
            for c in p.create] == [
        (f"{D}/disk.local", "qcow2", "vdb", DiskUse.EPHEMERAL, 3 * GIB),
        (f"{D}/disk.swap", "raw", "vdc", DiskUse.SWAP, 512 * MIB)]
    assert p.added == [c.disk for c in p.create]
    assert p.files == [ROOT, *p.added]
    assert p.drop == []


def test_a_flavor_without_extra_disks_touches_only_the_root_disk() -> None:
    p = plan([ROOT, DATA, BACKING], sizes(disk=5))
    assert [g.disk for g in p.grow] == [ROOT]
    assert (p.create, p.drop, p.added) == ([], [], [])
    assert p.files == [ROOT, DATA, BACKING]


def test_a_resize_grows_root_and_ephemeral_and_recreates_swap_at_the_new_size() -> None:
    p = plan([ROOT, EPH, SWAP, DATA], sizes(disk=4, eph=6, swap=2048))
    assert [(g.disk, g.size_bytes) for g in p.grow] == [(ROOT, 4 * GIB), (EPH, 6 * GIB)]
    assert [(c.disk, c.size_bytes) for c in p.create] == [(SWAP, 2048 * MIB)]
    assert p.added == []  # the swap keeps its place in the definition
    assert p.files == [ROOT, EPH, SWAP, DATA]


def test_smaller_sizes_are_targets_for_a_grow_that_never_shrinks() -> None:
    # The plan names the flavor's size; disks.grow leaves a larger disk as it is (the
    # operator refuses such a resize before this point anyway).
    p = plan([ROOT, EPH], sizes(disk=1, eph=1))
    assert [(g.disk, g.size_bytes) for g in p.grow] == [(ROOT, GIB), (EPH, GIB)]
    assert p.create == []


def test_a_flavor_without_swap_drops_it_and_one_without_ephemeral_keeps_it() -> None:
    p = plan([ROOT, EPH, SWAP], sizes(disk=1, eph=0, swap=0))
    assert p.drop == [SWAP]
    assert p.files == [ROOT, EPH]  # an ephemeral disk is never dropped (data)
    assert [g.disk for g in p.grow] == [ROOT]


def test_gaining_ephemeral_and_swap_adds_disks_on_free_targets_and_names() -> None:
    taken = VMDisk(path=f"{D}/disk.local", format="raw", target="vdb")  # a volume's name
    p = plan([ROOT, taken, SWAP], sizes(disk=1, eph=2, swap=0))
    assert p.drop == [SWAP]
    assert [(d.path, d.target, d.use) for d in p.added] == [
        (f"{D}/flavor1-disk.local", "vdc", DiskUse.EPHEMERAL)]  # vdc: the swap's, freed
    assert p.files == [ROOT, taken, *p.added]


def test_the_same_inputs_give_the_same_plan_on_every_side() -> None:
    files = [ROOT, SWAP]
    assert plan(files, sizes(eph=1, swap=64)) == plan(list(files), sizes(eph=1, swap=64))


@pytest.mark.parametrize(("disk", "skipped"), [(SWAP, True), (EPH, False), (ROOT, False),
                                               (SWAP.model_copy(update={"role": DiskRole.MEDIA}),
                                                False)])
def test_only_swap_stays_behind(disk: VMDisk, skipped: bool) -> None:
    assert not_copied(disk) is skipped


def test_serials_name_the_flavor_disks_and_fit_virtio() -> None:
    assert {use_of_serial(s) for s in SERIALS.values()} == {DiskUse.EPHEMERAL, DiskUse.SWAP}
    assert use_of_serial("vm-data") is None
    assert use_of_serial(None) is None
    assert all(len(s) <= 20 for s in SERIALS.values())


def test_a_list_without_a_disk_is_refused() -> None:
    with pytest.raises(ValueError, match="no disk"):
        plan([BACKING], sizes())
