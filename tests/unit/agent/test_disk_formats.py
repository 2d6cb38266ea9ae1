"""Disk formats are given, never probed; backing chains are read, moved and re-linked.

Real ``qemu-img`` on temp files. The trap these tests close: a guest owns the bytes of its
raw disk and can write a qcow2 header there, naming any host file as a "backing file"; a
tool that probes would then read that host file into the VM.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vmresize.agent.errors import DiskError
from vmresize.agent.vmfiles import disks

MIB = 1024 * 1024


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "vm").mkdir(parents=True)
    return r


def hostile_raw_disk(root: Path, tmp_path: Path) -> Path:
    """A raw disk whose first bytes are a qcow2 header backed by a host file."""
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"host secret\n" * 100)
    crafted = tmp_path / "crafted.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(crafted),
             "1M")
    raw = root / "vm" / "data.raw"
    data = crafted.read_bytes()
    raw.write_bytes(data + b"\0" * (4 * MIB - len(data)))
    return raw


def test_a_raw_disk_with_a_qcow2_header_stays_raw(root: Path, tmp_path: Path) -> None:
    raw = hostile_raw_disk(root, tmp_path)
    probed = json.loads(qemu_img("info", "--output=json", str(raw)))
    assert probed["format"] == "qcow2"  # what probing would have believed
    assert "backing-filename" in probed
    got = disks.info(root, "vm/data.raw", "raw")
    assert (got.format, got.virtual_size) == ("raw", 4 * MIB)
    assert disks.backing_chain(root, "vm/data.raw", "raw") == []
    assert disks.grow(root, "vm/data.raw", 1, "raw") == disks.GIB
    assert raw.stat().st_size == disks.GIB  # grown as a raw file, header bytes untouched
    assert disks.read_head(root, "vm/data.raw", 4, "raw") == b"QFI\xfb"


def test_the_backing_chain_is_read_from_recorded_formats(root: Path) -> None:
    (root / "images").mkdir()
    base, mid = root / "images" / "base.raw", root / "vm" / "mid.qcow2"
    qemu_img("create", "-q", "-f", "raw", str(base), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(mid))
    qemu_img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2",
             str(root / "vm" / "top.qcow2"))
    assert disks.backing_chain(root, "vm/top.qcow2", "qcow2") == [
        (mid.resolve(), "qcow2"), (base.resolve(), "raw")]
    assert disks.backing_chain(root, "images/base.raw", "raw") == []


def test_a_backing_file_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.raw"
    qemu_img("create", "-q", "-f", "raw", str(outside), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(outside), "-F", "raw",
             str(root / "vm" / "top.qcow2"))
    with pytest.raises(DiskError, match="outside the storage root"):
        disks.backing_chain(root, "vm/top.qcow2", "qcow2")


def test_rebase_relinks_a_moved_chain_without_touching_data(root: Path) -> None:
    (root / "new").mkdir()
    base = root / "vm" / "base.raw"
    base.write_bytes(b"backing data\n".ljust(MIB, b"\0"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
             str(root / "vm" / "top.qcow2"))
    for name in ("base.raw", "top.qcow2"):  # what arrives at a destination
        disks.copy_local(root, f"vm/{name}", f"new/{name}")
    disks.rebase(root, "new/top.qcow2", "qcow2", "new/base.raw", "raw")
    assert disks.backing_chain(root, "new/top.qcow2", "qcow2") == [
        ((root / "new" / "base.raw").resolve(), "raw")]
    base.unlink()  # the old chain is gone; the new one reads its own base
    assert disks.read_head(root, "new/top.qcow2", 13) == b"backing data\n"


def test_unknown_formats_are_refused(root: Path) -> None:
    (root / "vm" / "x").write_bytes(b"\0" * 512)
    with pytest.raises(DiskError, match="unsupported disk format 'vmdk'"):
        disks.info(root, "vm/x", "vmdk")


def test_a_raw_base_image_with_a_qcow2_header_is_copied_as_raw(root: Path,
                                                              tmp_path: Path) -> None:
    hostile = hostile_raw_disk(root, tmp_path)
    (root / "images").mkdir()
    hostile.rename(root / "images" / "base.raw")
    disks.create_from_base(root, "vm/disk.qcow2", "images/base.raw", 1)
    # Its bytes, header included, are the guest's data; nothing of the host file came in.
    assert disks.read_head(root, "vm/disk.qcow2", 4) == b"QFI\xfb"
    assert disks.info(root, "vm/disk.qcow2", "qcow2").virtual_size == disks.GIB
    assert disks.backing_chain(root, "vm/disk.qcow2", "qcow2") == []


def test_a_base_image_must_declare_its_format_by_name(root: Path) -> None:
    (root / "images").mkdir()
    (root / "images" / "debian.img").write_bytes(b"\0" * MIB)
    with pytest.raises(DiskError, match=r"name it \*\.qcow2 or \*\.raw") as err:
        disks.create_from_base(root, "vm/disk.qcow2", "images/debian.img", 1)
    assert not err.value.retryable
    assert not (root / "vm" / "disk.qcow2").exists()
