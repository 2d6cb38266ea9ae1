"""The files a VM is made of, as the operator and the agents pass them around (pure).

A VM is more than its root disk (DESIGN.md invariant 9): ephemeral, swap and data disks,
read-only media (a config drive), the backing files of a qcow2 chain, UEFI variables, and
its own definition. :class:`VMDisk` names one of them by its path relative to a host's
storage root, with its format (from the domain XML, never probed), a size bound and, in
tasks, where it goes and under which transfer id.

:func:`destination` maps a source's files onto a destination instance directory: the same
file names, made unique, and one transfer id per file. The operator uses it to build
Prepare, MigrateDisk and Finish; the agents only ever see its result in a HostTask.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from enum import StrEnum

from pydantic import Field

from vmresize.api.meta import Model

DEFINITION_FILE = "domain.xml"
"""The source's domain definition, sent next to the disks (it is checksummed like them)."""
DEFINITION_BOUND = 1024 * 1024
"""Upper bound on a definition's size; libvirt's are a few KiB."""
QCOW2_SLACK = 1.02
"""A qcow2's file may exceed its virtual size by its metadata (L1/L2 tables, refcounts:
about 0.2 % at 64 KiB clusters); 2 % plus a floor bounds it with room."""
QCOW2_FLOOR = 16 * 1024 * 1024


class DiskRole(StrEnum):
    """What a file is to the VM."""

    DISK = "Disk"
    """A guest disk (root, ephemeral, swap, volume); the first is the root disk."""
    MEDIA = "Media"
    """A read-only medium image (CD-ROM, floppy)."""
    BACKING = "Backing"
    """A layer of a qcow2 backing chain (read-only under its overlay)."""
    NVRAM = "NVRAM"
    """The VM's UEFI variables."""
    DEFINITION = "Definition"
    """The domain's own XML (inactive, secure, migratable)."""


class DiskUse(StrEnum):
    """What a flavor made a guest disk for (Nova's ``disk.local`` and ``disk.swap``). The
    root disk (the first) and volumes carry none."""

    EPHEMERAL = "Ephemeral"
    """The flavor's ephemeral disk: grown with the flavor, never shrunk."""
    SWAP = "Swap"
    """The flavor's swap disk: its content is not kept; a resize recreates it at the new
    size (or drops it), so it never crosses the network."""


class VMDisk(Model):
    """One file of a VM on one host."""

    path: str = Field(min_length=1, max_length=4096)
    """Relative to the host's storage root."""
    role: DiskRole = DiskRole.DISK
    """What the file is to the VM."""
    format: str = Field(default="raw", pattern=r"^(raw|qcow2)$")
    """Image format, from the domain XML; passed to qemu-img and QEMU, never probed."""
    use: DiskUse | None = None
    """Disks a flavor made: ephemeral or swap (from the domain's disk serial, see the
    agent's ``flavordisks``); none for the root disk and volumes."""
    target: str | None = Field(default=None, max_length=32)
    """Guest device (``vda``) for disks and media."""
    backing: str | None = None
    """qcow2 overlays: the path of the file directly below (itself in the list)."""
    size_bytes: int = Field(default=0, ge=0)
    """Apparent size (an upper bound while the VM may still write)."""
    peer_path: str | None = None
    """MigrateDisk: where it goes on the destination, relative to that storage root."""
    transfer_id: str | None = Field(default=None, max_length=253)
    """Prepare/MigrateDisk/Finish: the id the destination receives this file under."""
    checksum: str | None = None
    """Disk checksum (``xxh3-128:<hex>``): reported by MigrateDisk, required by Finish before
    anything starts."""
    source_path: str | None = Field(default=None, max_length=4096)
    """MigrateDisk result, Finish: the file's absolute path in the source's definition,
    which the destination's definition replaces with its own."""


def bound(disk: VMDisk) -> int:
    """How large the file can be when it is sent (Prepare's space check and limit)."""
    if disk.role is DiskRole.DEFINITION:
        return DEFINITION_BOUND
    if disk.format == "qcow2":
        return int(disk.size_bytes * QCOW2_SLACK) + QCOW2_FLOOR
    return disk.size_bytes


def destination(files: Sequence[VMDisk], dest_dir: str, transfer_prefix: str
                ) -> list[VMDisk]:
    """``files`` (source paths) with ``peer_path`` and ``transfer_id`` set for a move into
    ``dest_dir``, plus the definition (its ``path`` is a placeholder: the source agent
    writes the captured XML next to the root disk). Names are kept where unique
    (``disk.qcow2``), else prefixed with their position. A definition file in ``files``
    (left by an earlier move, so deleted with the rest) does not move."""
    taken: set[str] = {DEFINITION_FILE}
    out: list[VMDisk] = []
    for i, f in enumerate(files):
        if f.role is DiskRole.DEFINITION:
            continue  # the one an earlier move left here; the source sends a fresh one
        name = posixpath.basename(f.path)
        if name in taken or not name or name.startswith("."):
            name = f"{i}-{name.lstrip('.') or 'file'}"
        taken.add(name)
        out.append(f.model_copy(update={"peer_path": posixpath.join(dest_dir, name),
                                        "transfer_id": f"{transfer_prefix}-{i}"}))
    out.append(VMDisk(path=DEFINITION_FILE, role=DiskRole.DEFINITION,
                      peer_path=posixpath.join(dest_dir, DEFINITION_FILE),
                      transfer_id=f"{transfer_prefix}-def"))
    return out


def arrived(files: Sequence[VMDisk]) -> list[VMDisk]:
    """The destination's view of moved files: ``path`` (and ``backing``) are where each
    landed."""
    moved = {f.path: f.peer_path for f in files}
    out = []
    for f in files:
        if f.peer_path is None:
            raise ValueError(f"{f.path} has no destination path")
        below = moved.get(f.backing) if f.backing else None
        out.append(f.model_copy(update={"path": f.peer_path, "peer_path": None,
                                        "backing": below}))
    return out
