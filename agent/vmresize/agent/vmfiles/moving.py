"""Moving a whole VM: every file it is made of, and its own definition (invariant 9).

The executor's resize steps call these; each works on the :class:`VMDisk` lists of a
HostTask and is idempotent, so a resumed step redoes only what is missing.

* Source, before power-off: :func:`capture` reads the domain's migratable definition,
  refuses what cannot move (:class:`UnmovableError`, the VM untouched), lists its files and
  checks them against the task's list (a disk attached since would otherwise stay behind).
  The definition is written next to the root disk and travels like a disk.
* Source, after power-off: :func:`send` copies each file, over the migration service or,
  when the destination's marker is visible here (shared storage, :mod:`sharedstore`),
  within the filesystem; every file is checksummed. A flavor's swap is not sent (its
  content is not kept; the destination makes it anew at the new size).
* Destination: :func:`verify` (each file's checksum before anything changes), :func:`relink`
  (``qemu-img rebase -u`` of each overlay onto its moved backing file), :func:`definition`
  (the source's XML with only vCPUs, memory, file paths and the name changed, and the
  flavor's disks dropped or added).
* Both: :func:`delete` removes the VM's files on this host, and nothing else: a backing
  file outside the instance's directory (a shared base image) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vmresize.agent.errors import (
    ChecksumStalledError,
    CopyChecksumMismatchError,
    StepError,
    TaskRefusedError,
    UnmovableError,
)
from vmresize.agent.hypervisor import domainxml, vmfiles
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import Received, StepProgress, Transfer
from vmresize.agent.transfer.sparse import disk_checksum
from vmresize.agent.vmfiles import disks
from vmresize.api import flavordisks
from vmresize.api.hosttask import PeerHost
from vmresize.api.vmdisks import DEFINITION_BOUND, DiskRole, VMDisk

DEFINITION_SUFFIX = ".domain.xml"
"""The captured definition, next to the source's root disk."""
VERIFIED_SUFFIX = ".verified-all"
"""Next to the destination's root disk: the digest of the list Finish verified."""
CHECKSUM_STALL_SECONDS = 120.0
"""A checksum that reads nothing for this long fails (the settings' default): a healthy
disk, however large or busy, hands over its next 4 MiB within seconds; one that does not
for two minutes is failing or hung, and the VM must not stay off while it hangs."""


@dataclass(frozen=True)
class Captured:
    """A source domain ready to move: its definition and the files to send."""

    xml: str
    files: list[VMDisk]


def root_disk(files: Sequence[VMDisk]) -> VMDisk:
    """The first guest disk of the list (the one a flavor's disk size is about)."""
    for f in files:
        if f.role is DiskRole.DISK:
            return f
    raise TaskRefusedError("no file-backed disk is listed")


def _chain(root: Path) -> vmfiles.ChainFn:
    """Backing chains read from the headers under ``root`` (recorded formats only)."""
    real = str(root)

    def read(path: str, fmt: str) -> list[tuple[str, str]]:
        rel = vmfiles.relative(real, path)
        return [(str(p), f) for p, f in disks.backing_chain(root, rel, fmt)]
    return read


def refuse_unmovable(xml: str, root: Path, name: str) -> None:
    """Raise :class:`UnmovableError` naming every reason the domain cannot move."""
    reasons = domainxml.unmovable(xml, str(root))
    if reasons:
        raise UnmovableError(f"{name} cannot move: " + "; ".join(reasons))


def capture(xml: str, name: str, root: Path, wanted: Sequence[VMDisk]) -> Captured:
    """Source, before power-off (blocking: run it in a thread): the domain ``name`` as
    ``xml`` (its exported definition) defines it. ``wanted`` is the task's list
    (``peer_path`` and ``transfer_id`` set); an empty one takes every file as is. The
    definition is written next to the root disk, where :func:`recapture` finds it."""
    refuse_unmovable(xml, root, name)
    captured = _match(xml, root, wanted, name)
    if wanted:
        path = confine(root, root_disk(captured.files).path + DEFINITION_SUFFIX)
        if not path.exists() or path.read_text() != xml:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(xml)
            tmp.replace(path)
    return captured


def recapture(root: Path, wanted: Sequence[VMDisk]) -> Captured:
    """Source, resumed after the domain was set aside: the same, from the written XML."""
    disk = root_disk([w for w in wanted if w.role is not DiskRole.DEFINITION])
    path = confine(root, disk.path + DEFINITION_SUFFIX)
    if not path.is_file():
        raise TaskRefusedError(f"the domain is gone and no definition was captured at "
                          f"{disk.path + DEFINITION_SUFFIX}")
    return _match(path.read_text(), root, wanted, "the domain")


def _match(xml: str, root: Path, wanted: Sequence[VMDisk], name: str) -> Captured:
    found = vmfiles.files(xml, str(root), _chain(root))
    if not wanted:
        return Captured(xml, found)
    defn_rel = root_disk(found).path + DEFINITION_SUFFIX
    by_path = {w.path: w for w in wanted
               if w.role not in (DiskRole.DEFINITION, DiskRole.OVERLAY)}  # pre-copy's own
    have = {f.path for f in found}
    if have != set(by_path):
        raise TaskRefusedError(f"the files of {name} changed since they were recorded: new "
                          f"{sorted(have - set(by_path))}, gone {sorted(set(by_path) - have)}")
    files = [f.model_copy(update={"peer_path": by_path[f.path].peer_path,
                                  "transfer_id": by_path[f.path].transfer_id}) for f in found]
    files += [w.model_copy(update={"path": defn_rel}) for w in wanted
              if w.role is DiskRole.DEFINITION]
    return Captured(xml, files)


async def send(root: Path, files: Sequence[VMDisk], *, transfer: Transfer, peer: PeerHost,
               shared: bool, progress: StepProgress | None = None,
               stall: float = CHECKSUM_STALL_SECONDS) -> list[VMDisk]:
    """Source, powered off: copy every file; return them with checksum and size."""
    out = []
    for f in files:
        if not f.peer_path or not f.transfer_id:
            raise TaskRefusedError(f"{f.path} has no destination path or transfer id")
        if flavordisks.not_copied(f):  # swap (by our own definition's serial): made anew
            out.append(f.model_copy(update={"checksum": None, "size_bytes": 0}))
            continue
        src = confine(root, f.path)
        if shared:
            dst = await asyncio.to_thread(disks.copy_local, root, f.path, f.peer_path)
            checksum = await file_checksum(dst, stall=stall)
            source = await file_checksum(src, stall=stall)
            if checksum != source:
                raise CopyChecksumMismatchError(f"local copy of {f.path} differs", retryable=True)
            size = dst.stat().st_size
        else:
            sent = await transfer.send(src=src, peer=peer, transfer_id=f.transfer_id,
                                       progress=progress.next_send() if progress else None)
            checksum, size = sent.checksum, sent.size_bytes
        out.append(f.model_copy(update={"checksum": checksum, "size_bytes": size,
                                        "source_path": f.source_path}))
    return out


async def file_checksum(path: Path, *, stall: float = CHECKSUM_STALL_SECONDS) -> str:
    """The disk checksum of ``path``, read in a thread, or a retryable
    :class:`ChecksumStalledError` once it has read nothing for ``stall`` seconds. The bound is
    on progress, not on the whole: a large healthy disk takes as long as it takes, a
    failing one (an open or a read that never returns) ends the step. The reading thread
    cannot be cancelled: it is left to its read, and the step goes on to fail."""
    read = [0]  # bytes read so far, counted by the hashing thread

    def count(n: int) -> None:
        read[0] += n

    job = asyncio.ensure_future(asyncio.to_thread(disk_checksum, path, count))
    try:
        last = 0
        while True:
            done, _ = await asyncio.wait({job}, timeout=stall)
            if done:
                return job.result()
            if read[0] == last:
                raise ChecksumStalledError(
                    f"the checksum of {path.name} read nothing for {stall:g} s "
                    f"({read[0]} bytes read before); the disk may be failing")
            last = read[0]
    finally:
        job.cancel()   # only the wait: the thread stays in its read until it returns


def _digest(files: Sequence[VMDisk]) -> str:
    lines = "".join(f"{f.path} {f.checksum}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def verified(root: Path, files: Sequence[VMDisk]) -> bool:
    """Whether this very list was verified (and re-linked) by an earlier attempt."""
    mark = confine(root, root_disk(files).path + VERIFIED_SUFFIX)
    return mark.exists() and mark.read_text().strip() == _digest(files)


async def verify(root: Path, files: Sequence[VMDisk], transfer: Transfer, *,
                 stall: float = CHECKSUM_STALL_SECONDS) -> None:
    """Destination: each file arrived whole with the source's checksum (invariant 2)."""
    for f in files:
        if flavordisks.not_copied(f):
            continue  # never sent: Finish makes it anew
        if not f.checksum:
            raise TaskRefusedError(f"no expected checksum for {f.path}")
        state = transfer.received(f.transfer_id) if f.transfer_id else None
        await verify_file(confine(root, f.path), f.path, f.checksum, state, stall=stall)


async def verify_file(path: Path, rel: str, expected: str, state: Received | None, *,
                      stall: float = CHECKSUM_STALL_SECONDS) -> None:
    """Destination: ``path`` holds the content whose disk checksum
    (:mod:`vmresize.agent.transfer.sparse`) is ``expected``, or a retryable
    :class:`StepError` (not there yet) or :class:`CopyChecksumMismatchError`."""
    if _verified_on_arrival(path, rel, expected, state):
        return
    actual = await file_checksum(path, stall=stall)
    if actual != expected:
        raise CopyChecksumMismatchError(f"{rel} has checksum {actual}, expected {expected}; "
                                   "refusing to start it")


def _verified_on_arrival(path: Path, rel: str, expected: str, state: Received | None) -> bool:
    if not path.is_file():
        why = "is not completely received yet" if state is not None else "is missing"
        raise StepError(f"{rel} {why}", retryable=True)
    # The receiver computed this very checksum over the whole content before it fsynced
    # and renamed the file into place (in-stream on a fresh copy, a read-back of the whole
    # file after a resume): reading the disk again would prove nothing more and costs a
    # disk's worth of hashing while the VM is down. A file that came another way (shared
    # storage copies within the filesystem; the receiver's state is then still open) is
    # read.
    return state is not None and state.complete and state.checksum == expected


def mark_verified(root: Path, files: Sequence[VMDisk]) -> None:
    """Destination: record that this very list was verified (before anything changes
    a file of it: a re-link rewrites headers, a pre-copy merge the disks)."""
    mark = confine(root, root_disk(files).path + VERIFIED_SUFFIX)
    mark.write_text(_digest(files) + "\n")


def relink(root: Path, files: Sequence[VMDisk]) -> None:
    """Destination: point each qcow2 at its moved backing file (idempotent; pre-copy's
    overlays are re-linked when they are merged, :func:`overlays.merge_arrived`)."""
    fmt = {f.path: f.format for f in files}
    for f in files:
        if f.backing and f.role is not DiskRole.OVERLAY:
            if f.backing not in fmt:
                raise TaskRefusedError(f"backing file {f.backing} of {f.path} did not move")
            disks.rebase(root, f.path, f.format, f.backing, fmt[f.backing])


def definition(root: Path, files: Sequence[VMDisk], *, vcpus: int, memory_mib: int,
               name: str, drop: Sequence[VMDisk] = (),
               add: tuple[domainxml.NewDisk, ...] = ()) -> str:
    """Destination: the source's definition, rewritten for this host; the disks in
    ``drop`` (by their source path) left out and ``add`` added (a flavor's disks)."""
    defn = [f for f in files if f.role is DiskRole.DEFINITION]
    if len(defn) != 1:
        raise TaskRefusedError("exactly one definition file must arrive with the disks")
    path = confine(root, defn[0].path)
    if path.stat().st_size > DEFINITION_BOUND:
        raise TaskRefusedError(f"{defn[0].path} is larger than {DEFINITION_BOUND} bytes")
    xml = domainxml.edit_disks(path.read_text(), drop=frozenset(
        d.source_path for d in drop if d.source_path))
    moved = [f for f in files if f.role is not DiskRole.DEFINITION]
    mapping = vmfiles.path_map(moved, str(root))
    old_dir = posixpath.dirname(root_disk(moved).source_path or "")
    new_dir = posixpath.dirname(mapping.get(root_disk(moved).source_path or "", ""))
    for log in domainxml.host_files(xml):  # serial/console logs follow the instance dir
        if old_dir and posixpath.dirname(log) == old_dir:
            mapping.setdefault(log, posixpath.join(new_dir, posixpath.basename(log)))
    return domainxml.edit_disks(domainxml.rewrite(
        xml, vcpus=vcpus, memory_mib=memory_mib, disk_paths=mapping, name=name), add=add)


def delete(root: Path, files: Sequence[VMDisk], extra_suffixes: Sequence[str] = ()) -> None:
    """Remove the VM's files here: everything in its own directory, backing files only
    there (a base image elsewhere is shared with other VMs and stays)."""
    own = posixpath.dirname(root_disk(files).path) + "/" if any(
        f.role is DiskRole.DISK for f in files) else None
    for f in files:
        if f.role is DiskRole.BACKING and (own is None or not f.path.startswith(own)):
            continue
        for suffix in (*extra_suffixes, DEFINITION_SUFFIX, VERIFIED_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                confine(root, f.path + suffix).unlink()
        disks.remove(root, f.path)
