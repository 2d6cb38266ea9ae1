"""Nova's disk semantics for flavors (pure): which disks a flavor's sizes grow, create,
recreate or drop.

A flavor gives a VM a root disk, optionally an ephemeral disk (``ephemeralGiB``) and a swap
disk (``swapMiB``). Spawn and Finish (the destination of a resize) both call :func:`plan`
with the VM's files and the flavor; the operator calls it too, with the same inputs, to know
the files the resized VM has (the Instance's list after Confirm) and the ones a revert must
delete on the destination. Same inputs, same answer on every side.

* The root disk (the first guest disk) and every ephemeral disk GROW to the flavor's size
  and never shrink: a smaller size leaves them as they are (the operator refuses such a
  resize before anything is touched, as Nova does).
* The swap disk is RECREATED at the new size: its content is not kept, so it is never
  copied; a flavor without swap drops it from the definition.
* A flavor that gains an ephemeral disk or swap gets a new disk, in the root disk's
  directory, on the next free ``vdX`` target.

The disks a flavor made are recognised in the domain by their serial (:data:`SERIALS`),
which the guest also sees (``/dev/disk/by-id/virtio-vmresize-swap``). A disk of a domain
defined outside vmresize never carries one, so it is copied and kept like any volume.
"""

from __future__ import annotations

import posixpath
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vmresize.api.vmdisks import DiskRole, DiskUse, VMDisk

GIB = 1024 ** 3
MIB = 1024 ** 2
SERIALS = {DiskUse.EPHEMERAL: "vmresize-ephemeral", DiskUse.SWAP: "vmresize-swap"}
"""The ``<serial>`` of the disks a flavor made (virtio-blk keeps at most 20 bytes)."""
NAMES = {DiskUse.EPHEMERAL: "disk.local", DiskUse.SWAP: "disk.swap"}
"""File names of new flavor disks (Nova's), next to the root disk."""
FORMATS = {DiskUse.EPHEMERAL: "qcow2", DiskUse.SWAP: "raw"}
"""An ephemeral disk is a blank sparse qcow2 (the guest formats it, as cloud-init does);
swap is a raw sparse file with a swap signature (``mkswap``, as Nova makes it)."""


def use_of_serial(serial: str | None) -> DiskUse | None:
    """The flavor disk a ``<serial>`` names, if any."""
    for use, s in SERIALS.items():
        if serial == s:
            return use
    return None


class Sizes(Protocol):
    """The disk sizes of a flavor (``FlavorSpec`` and ``TaskFlavor`` both have them)."""

    @property
    def disk_gib(self) -> int:
        """Root disk, GiB."""
        ...

    @property
    def ephemeral_gib(self) -> int:
        """Ephemeral disk, GiB (0: none)."""
        ...

    @property
    def swap_mib(self) -> int:
        """Swap disk, MiB (0: none)."""
        ...


@dataclass(frozen=True)
class Sized:
    """A disk and the virtual size (bytes) it must have."""

    disk: VMDisk
    size_bytes: int


@dataclass(frozen=True)
class Plan:
    """What the flavor does to the VM's files (see the module docstring)."""

    files: list[VMDisk]
    """The VM's files afterwards: dropped disks gone, new ones appended."""
    grow: list[Sized] = field(default_factory=list)
    """Disks that move and grow to at least this size (never shrunk)."""
    create: list[Sized] = field(default_factory=list)
    """Disks made here, fresh: a recreated swap, new ephemeral or swap disks."""
    drop: list[VMDisk] = field(default_factory=list)
    """Disks the VM no longer has (swap, when the flavor has none): not made, not defined."""
    added: list[VMDisk] = field(default_factory=list)
    """Created disks the VM did not have before: new ``<disk>`` elements."""


def _root(files: Sequence[VMDisk]) -> VMDisk:
    for f in files:
        if f.role is DiskRole.DISK:
            return f
    raise ValueError("the VM has no disk")


def _free_target(taken: set[str]) -> str:
    for letter in string.ascii_lowercase[1:]:
        if f"vd{letter}" not in taken:
            return f"vd{letter}"
    raise ValueError("no free virtio disk target left")


def _free_name(directory: str, name: str, taken: set[str]) -> str:
    candidate, n = name, 0
    while posixpath.join(directory, candidate) in taken:
        n += 1
        candidate = f"flavor{n}-{name}"
    return posixpath.join(directory, candidate)


def plan(files: Sequence[VMDisk], sizes: Sizes) -> Plan:
    """What ``sizes`` does to ``files`` (the VM's files on the host that runs it next)."""
    root = _root(files)
    grow = [Sized(root, sizes.disk_gib * GIB)]
    create: list[Sized] = []
    drop: list[VMDisk] = []
    kept: list[VMDisk] = []
    added: list[VMDisk] = []
    for f in files:
        if f.use is DiskUse.EPHEMERAL and sizes.ephemeral_gib > 0 and f.role is DiskRole.DISK:
            grow.append(Sized(f, sizes.ephemeral_gib * GIB))
        if f.use is DiskUse.SWAP and f.role is DiskRole.DISK:
            if sizes.swap_mib > 0:
                create.append(Sized(f, sizes.swap_mib * MIB))
            else:
                drop.append(f)
                continue
        kept.append(f)
    has = {f.use for f in kept if f.role is DiskRole.DISK}
    targets = {f.target for f in kept if f.target}
    paths = {f.path for f in files}
    directory = posixpath.dirname(root.path)
    for use, size in ((DiskUse.EPHEMERAL, sizes.ephemeral_gib * GIB),
                      (DiskUse.SWAP, sizes.swap_mib * MIB)):
        if size <= 0 or use in has:
            continue
        new = VMDisk(path=_free_name(directory, NAMES[use], paths), format=FORMATS[use],
                     use=use, target=_free_target(targets))
        targets.add(new.target or "")
        paths.add(new.path)
        create.append(Sized(new, size))
        kept.append(new)
        added.append(new)
    return Plan(files=kept, grow=grow, create=create, drop=drop, added=added)


def not_copied(disk: VMDisk) -> bool:
    """Whether a resize leaves this file behind (and makes it anew where the VM lands)."""
    return disk.use is DiskUse.SWAP and disk.role is DiskRole.DISK
