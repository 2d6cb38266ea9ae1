"""The VM's file list (destination mapping, size bounds) and NICs (MACs, source rule)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from vmresize.api import nics, vmdisks
from vmresize.api.hosttask import HostTaskSpec, TaskAction
from vmresize.api.vmdisks import DiskRole, VMDisk

SRC = "instances/ns/web/6f1c2a1e"
DST = "instances/ns/web/9b0d7e44"
GIB = 1024**3


def files() -> list[VMDisk]:
    return [
        VMDisk(path=f"{SRC}/disk.qcow2", format="qcow2", target="vda", size_bytes=GIB,
               backing="images/base.raw"),
        VMDisk(path="images/base.raw", role=DiskRole.BACKING, size_bytes=2 * GIB),
        VMDisk(path=f"{SRC}/data/disk.qcow2", format="qcow2", target="vdb", size_bytes=GIB),
        VMDisk(path=f"{SRC}/disk.config", role=DiskRole.MEDIA, target="sda", size_bytes=65536),
    ]


def test_destination_keeps_names_makes_them_unique_and_adds_the_definition() -> None:
    out = vmdisks.destination(files(), DST, "t1")
    assert [(f.peer_path, f.transfer_id) for f in out] == [
        (f"{DST}/disk.qcow2", "t1-0"), (f"{DST}/base.raw", "t1-1"),
        (f"{DST}/2-disk.qcow2", "t1-2"), (f"{DST}/disk.config", "t1-3"),
        (f"{DST}/domain.xml", "t1-def")]
    assert out[-1].role is DiskRole.DEFINITION
    landed = vmdisks.arrived(out)
    assert [f.path for f in landed] == [f.peer_path for f in out]
    assert landed[0].backing == f"{DST}/base.raw"  # the chain is re-linked at the dest
    assert all(f.peer_path is None for f in landed)
    again = vmdisks.destination(landed, SRC, "t2")  # the next move of the moved VM
    assert [f.role for f in again].count(DiskRole.DEFINITION) == 1
    assert again[-1].transfer_id == "t2-def"


def test_bounds_cover_qcow2_metadata_and_nothing_more_for_raw() -> None:
    qcow, raw = files()[0], files()[1]
    assert vmdisks.bound(qcow) > GIB
    assert vmdisks.bound(raw) == 2 * GIB
    assert vmdisks.bound(VMDisk(path="x", role=DiskRole.DEFINITION)) == vmdisks.DEFINITION_BOUND


def test_formats_are_only_the_ones_the_agent_handles() -> None:
    with pytest.raises(ValidationError):
        VMDisk(path="x", format="vmdk")


def test_an_old_operator_task_still_parses() -> None:
    spec = HostTaskSpec.model_validate({"host": "h", "action": "Prepare", "owner": "a/b",
                                        "instance": "a/b", "diskPath": "x"})
    assert spec.action is TaskAction.PREPARE
    assert spec.disks == []


def test_generated_macs_are_stable_unicast_and_per_nic() -> None:
    a = nics.generated_mac("uid-1", 0)
    assert a == nics.generated_mac("uid-1", 0)
    assert a != nics.generated_mac("uid-1", 1)
    assert a != nics.generated_mac("uid-2", 0)
    assert re.match(nics.MAC, a)
    assert a.startswith("52:54:00:")
    given = nics.Interface(mac="fa:16:3e:00:00:01")
    out = nics.with_macs([given, nics.Interface()], "uid-1")
    assert [i.mac for i in out] == ["fa:16:3e:00:00:01", nics.generated_mac("uid-1", 1)]


@pytest.mark.parametrize("bad", [
    {"type": "bridge"}, {"type": "network"}, {"type": "user", "source": "br0"},
    {"mac": "01:00:5e:00:00:01"}, {"mac": "FA:16:3E:00:00:01"}, {"model": "vir tio"},
])
def test_bad_interfaces_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        nics.Interface.model_validate(bad)
