"""The per-file work of each step on a task that lists a VM's files (``spec.disks``).

The steps (:mod:`vmresize.agent.steps`) keep what they share (fencing, power-off,
holding the source, the bounded libvirt calls, the result); this module does the work on
the files with :mod:`moving`. It makes no libvirt call: what it needs of a domain (its
definition) the step reads through the time-limited hypervisor and passes in.

* Adopt: :func:`adopted` lists the files (with sizes) or says why the VM cannot move.
* Prepare: :func:`prepare` checks space for all that will land (:func:`bytes_to_land`), accepts
  each file under its transfer id, and writes the shared-storage marker.
* MigrateDisk: :func:`capture` before the power-off (refusing what cannot move), then
  :func:`send` after it.
* Finish: :func:`arrive` verifies once, re-links, merges pre-copy's overlays, applies the
  flavor's disk sizes (:mod:`vmresize.api.flavordisks`), and returns the definition to
  define.
* Confirm, CleanupDest, Destroy: :func:`delete`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

from vmresize.agent.errors import (
    InsufficientSpaceError,
    TaskRefusedError,
    TransferRefusedError,
    UnmovableError,
)
from vmresize.agent.hypervisor import domainxml
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import StepProgress, Transfer
from vmresize.agent.vmfiles import flavorfiles, moving, overlays, sharedstore
from vmresize.api import flavordisks, vmdisks
from vmresize.api.hosttask import HostTaskSpec, PeerHost, TaskFlavor
from vmresize.api.vmdisks import DiskRole, DiskUse, VMDisk, bound

log = logging.getLogger(__name__)
TRANSFER_SUFFIXES = (".partial", ".xfer")
MIB = 1024 * 1024
OVERLAY_SHARE = 8
"""Pre-copy: Prepare reserves for an overlay 1/OVERLAY_SHARE of the disk below it (at least
OVERLAY_FLOOR, at most the overlay's own bound). The guest's writes during the live copy
grow with the copy's duration, which grows with the disk: a share of it, not a constant."""
OVERLAY_FLOOR = 32 * MIB


root_disk = moving.root_disk


def _marker_id(spec: HostTaskSpec) -> str:
    if not spec.transfer_id:
        raise TaskRefusedError(f"{spec.action.value} needs spec.transferId")
    return spec.transfer_id


def adopted(xml: str, root: Path, name: str
            ) -> tuple[list[VMDisk], str | None, str]:
    """The domain ``name`` defined by ``xml`` (its exported definition): (files with sizes,
    None, root disk format), or ([], why it cannot move, format) (blocking: run it in a
    thread)."""
    try:
        files = moving.capture(xml, name, root, []).files
    except UnmovableError as e:
        first = [d for d in domainxml.inventory(xml)
                 if d.device == "disk" and d.type == "file"]
        return [], str(e), (first[0].format or "raw") if first else "raw"
    swap = [f.path for f in files if flavordisks.not_copied(f)]
    if swap:
        # The serial is how vmresize knows the swap disk it made, whose content is never
        # sent. A domain defined elsewhere with that serial on a disk would lose its data.
        return [], (f"{', '.join(swap)} carries the disk serial "
                    f"'{flavordisks.SERIALS[DiskUse.SWAP]}', which vmresize reserves for "
                    "the swap disk a flavor makes (never copied, made anew on the "
                    "destination); give that disk another serial to move it"), \
            root_disk(files).format
    return [f.model_copy(update={"size_bytes": confine(root, f.path).stat().st_size})
            for f in files], None, root_disk(files).format


refuse_unmovable = moving.refuse_unmovable


def captured(root: Path, rel: str) -> str | None:
    """The definition MigrateDisk captured next to the root disk ``rel``, if any: what
    RestoreSource defines again when the source domain is gone."""
    path = confine(root, rel + moving.DEFINITION_SUFFIX)
    return path.read_text() if path.is_file() else None


def root_format(xml: str, root: Path, rel: str) -> str:
    """The format the definition gives the disk ``rel`` (qcow2 if it does not name it)."""
    want = confine(root, rel)
    for d in domainxml.inventory(xml):
        if d.type == "file" and d.source and Path(d.source).resolve() == want and d.format:
            return d.format
    return "qcow2"


def overlay_reserve(overlay: VMDisk, below: VMDisk | None) -> int:
    """What Prepare reserves for a pre-copy overlay: a share of the disk below it (see
    OVERLAY_SHARE), twice: Finish commits the overlay into that disk before deleting it, so
    for a moment its data is on the filesystem two times. An overlay that outgrows this
    fails its transfer (which is bounded by the overlay's own bound) or its commit, and the
    VM restarts on its source."""
    share = max(OVERLAY_FLOOR, (bound(below) if below is not None else 0) // OVERLAY_SHARE)
    return 2 * min(bound(overlay), share)


def made_by_flavor(files: Sequence[VMDisk], flavor: TaskFlavor | None) -> int:
    """Bytes Finish writes here for ``flavor`` (:func:`flavordisks.plan`), by the rule of
    :func:`vmdisks.bound`: a raw file at its full size, a qcow2 at the data it holds. So a
    new or recreated swap (raw) counts its size, a new ephemeral disk (a blank qcow2) its
    metadata; a raw disk that grows counts the growth, a qcow2 that grows nothing (its new
    space is filled later, lazily, like any VM's; the Host's diskGiB claim that the
    scheduler checks covers it)."""
    if flavor is None:
        return 0
    plan = flavordisks.plan([f for f in files if f.role is not DiskRole.OVERLAY], flavor)
    made = sum(bound(c.disk.model_copy(update={"size_bytes": c.size_bytes if c.disk.format
                                               == "raw" else 0})) for c in plan.create)
    return made + sum(max(0, g.size_bytes - g.disk.size_bytes) for g in plan.grow
                      if g.disk.format == "raw")


def promised_bytes(f: VMDisk, files: Sequence[VMDisk]) -> int:
    """What Prepare counts for the file ``f`` of ``files`` until it arrives: its bound, or
    an overlay's reserve. The transfer is accepted with this as its promise, so a later
    Prepare on the filesystem sees the same (``Transfer.pending_bytes``)."""
    if f.role is not DiskRole.OVERLAY:
        return bound(f)
    return overlay_reserve(f, next((b for b in files if b.path == f.backing), None))


def bytes_to_land(files: Sequence[VMDisk], waiting: Sequence[VMDisk], flavor: TaskFlavor | None
            ) -> tuple[int, int, int]:
    """What the move will write on the destination's filesystem by the end of Finish:
    (the ``waiting`` files as they are sent, the overlays' reserve, what the flavor makes).
    ``waiting``: the files of ``files`` neither received nor already promised."""
    sent = sum(promised_bytes(f, files) for f in waiting if f.role is not DiskRole.OVERLAY)
    reserve = sum(promised_bytes(f, files) for f in waiting if f.role is DiskRole.OVERLAY)
    return sent, reserve, made_by_flavor(files, flavor)


def ensure_space(where: Path, need: int, promised: int, what: str, detail: str = "") -> None:
    """InsufficientSpaceError unless the filesystem of the directory ``where`` (the instance
    directory may be a mount of its own) holds ``need`` bytes beyond the ``promised`` ones
    that transfers already accepted there may still write. ``what`` lands there;
    ``detail`` says what ``need`` is made of."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    if free - promised < need:
        raise InsufficientSpaceError(
            f"{free} bytes free where {what} lands, {promised} of them promised to transfers "
            f"in flight; {need} needed{detail}")


def prepare(root: Path, transfer: Transfer, spec: HostTaskSpec, *, promised: int = 0
            ) -> tuple[list[VMDisk], int]:
    """Destination: accept every file (idempotent) if all that will land fits, else
    InsufficientSpaceError before anything is accepted. Returns the list and the bytes needed.
    ``promised``: what transfers already in flight here may still write."""
    files = spec.disks
    dest_dir = posixpath.dirname(root_disk(files).path)
    todo, waiting = [], []
    for f in files:
        if flavordisks.not_copied(f):
            continue  # swap never crosses: Finish makes it anew (counted in bytes_to_land())
        if not f.transfer_id:
            raise TaskRefusedError(f"{f.path} has no transfer id")
        known = transfer.received(f.transfer_id) is not None
        if not known and confine(root, f.path).exists():
            continue  # received, verified and its bookkeeping dropped: a resumed Prepare
        todo.append(f)
        if not known:  # an accepted transfer's bytes are in ``promised`` already
            waiting.append(f)
    sent, reserve, made = bytes_to_land(files, waiting, spec.flavor)
    need = sent + reserve + made
    target = confine(root, dest_dir)
    target.mkdir(parents=True, exist_ok=True)
    ensure_space(target, need, promised, "the VM",
                 f": {sent} for the files sent, {reserve} reserved for pre-copy overlays, "
                 f"{made} for the disks the new flavor makes")
    for f in todo:
        try:
            transfer.expect(f.transfer_id or "", f.path, bound(f),
                            promised=promised_bytes(f, files))
        except TransferRefusedError as e:
            raise TaskRefusedError(f"cannot accept {f.path}: {e}") from e
    sharedstore.mark(root, dest_dir, _marker_id(spec))
    return list(files), need


def capture(xml: str | None, root: Path, spec: HostTaskSpec) -> tuple[list[VMDisk], bool]:
    """Source, before any power-off (blocking): the files to send, and whether the
    destination shares our storage. ``xml``: the domain's exported definition while it is
    still defined (None: a resumed step reads the definition it wrote next to the root
    disk)."""
    name = spec.domain_name or ""
    if xml is not None:
        files = moving.capture(xml, name, root, spec.disks).files
    else:
        files = moving.recapture(root, spec.disks).files
    dest = root_disk(files).peer_path
    if not dest:
        raise TaskRefusedError(f"no destination path for {root_disk(files).path}")
    return files, sharedstore.visible(root, posixpath.dirname(dest), _marker_id(spec))


async def send(root: Path, files: Sequence[VMDisk], *, transfer: Transfer, peer: PeerHost,
               shared: bool, progress: StepProgress | None, stall: float) -> list[VMDisk]:
    """Source: every file, checksummed (``stall``: see :func:`moving.checksum`)."""
    sent = await moving.send(root, files, transfer=transfer, peer=peer, shared=shared,
                             progress=progress, stall=stall)
    log.info("sent %d file(s), %d bytes", len(sent), sum(f.size_bytes for f in sent))
    return sent


async def arrive(root: Path, transfer: Transfer, spec: HostTaskSpec, flavor: TaskFlavor, *,
                 stall: float) -> tuple[str, list[VMDisk]]:
    """Destination: verify every file (once), re-link chains, grow the root and ephemeral
    disks, make the swap and new disks (:mod:`flavorfiles`); return the definition for this
    host and the VM's files here."""
    files = spec.disks
    if not moving.verified(root, files):
        await moving.verify(root, files, transfer, stall=stall)
        await asyncio.to_thread(moving.mark_verified, root, files)
    log.info("%s: %d file(s) verified", spec.domain_name, len(files))
    await asyncio.to_thread(moving.relink, root, files)
    await asyncio.to_thread(overlays.merge_arrived, root, files)
    log.info("%s: chains re-linked, overlays merged", spec.domain_name)
    files = [f for f in files if f.role is not DiskRole.OVERLAY]  # merged into their disks
    plan = flavordisks.plan(files, flavor)
    await asyncio.to_thread(flavorfiles.make, root, plan)
    log.info("%s: flavor's disks sized", spec.domain_name)
    xml = moving.definition(root, files, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib,
                            name=spec.domain_name or "", drop=plan.drop,
                            add=flavorfiles.devices(root, plan))
    return xml, plan.files


def settle(root: Path, transfer: Transfer, spec: HostTaskSpec) -> None:
    """Destination, once the VM runs: drop the transfers' bookkeeping and the marker."""
    for f in [*spec.disks, *vmdisks.overlays(spec.disks)]:  # overlays not sent: VM was off
        if f.transfer_id:
            transfer.forget(f.transfer_id)
    if spec.transfer_id:
        sharedstore.clear(root, posixpath.dirname(root_disk(spec.disks).path),
                          spec.transfer_id)


def delete(root: Path, transfer: Transfer, spec: HostTaskSpec,
           sidecars: Sequence[str] = ()) -> None:
    """Confirm/CleanupDest/Destroy: the VM's own files here, and nothing else."""
    files = spec.disks
    for f in files:
        if f.transfer_id:
            transfer.forget(f.transfer_id)
    if spec.transfer_id and any(f.role is DiskRole.DISK for f in files):
        sharedstore.clear(root, posixpath.dirname(root_disk(files).path), spec.transfer_id)
    moving.delete(root, files, (*sidecars, *TRANSFER_SUFFIXES))
