"""Pre-copy: move a running VM's disks with a downtime that does not grow with them.

The mechanism is an external disk-only snapshot (:mod:`~vmresize.agent.hypervisor.blockjobs`):

1. VM running: every writable guest disk gets a qcow2 overlay beside it
   (``<disk>.vmresize-overlay.qcow2``, the task lists them with role ``Overlay``); from
   then on the guest writes only there and the disks below are frozen.
2. Every frozen file (disks, backing files, media, the definition captured before the
   overlays) is sent while the VM runs, checksummed as always.
3. MigrateDisk (:mod:`migrate`) powers the VM off and holds it, as in the offline mode.
4. The overlays (what the guest wrote during the copy) and the UEFI variables are sent,
   checksummed. The chain as it stood at power-off, frozen disks plus overlays, stays on
   the source untouched until Confirm (invariant 1): the held definition names the
   overlays, so RestoreSource starts the VM on exactly that chain.
5. Destination (Finish): every file, overlays included, is verified against the
   source's checksum before anything changes (invariant 2); then each overlay is re-linked
   onto the received disk and committed into it (:mod:`~vmresize.agent.vmfiles.overlays`), and
   Finish goes on as in the offline mode.

Rollback: RestoreSource (the VM running, or started again from the held definition)
merges each overlay back with a live commit and deletes it (:func:`merge_back`);
if the domain is gone, the overlays are committed offline before the captured
definition (which names the disks below) is defined again. An overlay is deleted only
once the guest's chains, read again after the commit, no longer name it; a commit that
failed (no space or an I/O error on the disk below) leaves the overlay, which the guest
goes on writing to, and the record, so RestoreSource fails (retryable) and its next
attempt merges again.

Decide, record, act: ``<root disk>.precopy`` (a
:class:`~vmresize.agent.vmfiles.markers.PreCopy`) is written before the overlays are made
and records the files sent live with their checksums, so an agent killed in any phase
resumes: overlays already in place are not made again, files already sent are not hashed
again. A VM that is off when MigrateDisk starts moves the offline way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from vmresize.agent.errors import HypervisorError, StepError
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.paths import confine
from vmresize.agent.steps.context import StepContext
from vmresize.agent.vmfiles import markers, wholevm
from vmresize.agent.vmfiles.overlays import commit_offline
from vmresize.api.hosttask import HostTaskSpec, PeerHost
from vmresize.api.vmdisks import DiskRole, VMDisk

log = logging.getLogger(__name__)
AFTER_POWER_OFF = (DiskRole.OVERLAY, DiskRole.NVRAM)
"""What the guest may still write while it runs: sent once it is off."""


def _free(path: Path) -> str:
    """Free space on the filesystem of ``path``, for people."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return "unknown space"
    return f"{st.f_bavail * st.f_frsize / (1 << 20):.1f} MiB"


def wanted(spec: HostTaskSpec) -> list[VMDisk]:
    """The overlays the task asks for (none: the offline mode)."""
    return [f for f in spec.disks if f.role is DiskRole.OVERLAY]


async def _capture(ctx: StepContext, spec: HostTaskSpec, defined: str | None
                   ) -> tuple[list[VMDisk], bool]:
    """:func:`wholevm.capture` of the domain ``defined`` names (its definition read through
    the time-limited hypervisor: a libvirt that hangs here ends the step, not the agent's
    loop), or of the definition written beside the disk (None: the domain is held)."""
    xml = await ctx.hv.export(defined) if defined is not None else None
    return await asyncio.to_thread(wholevm.capture, xml, ctx.root, spec)


async def before_power_off(ctx: StepContext, spec: HostTaskSpec, name: str,
                            peer: PeerHost, defined: bool
                            ) -> tuple[list[VMDisk], bool, list[VMDisk]]:
    """MigrateDisk up to the power-off: (files still to send, shared storage, files
    already sent). Offline mode: everything is still to send."""
    plain = spec.model_copy(update={"disks": [f for f in spec.disks
                                              if f.role is not DiskRole.OVERLAY]})
    rel = wholevm.root_disk(plain.disks).path
    record = await asyncio.to_thread(markers.read_precopy, ctx.root, rel)
    if record is not None and record.transfer != spec.transfer_id:
        raise StepError(f"{rel} carries the pre-copy overlays of another move "
                        f"({record.transfer}); RestoreSource merges them back",
                        retryable=False)
    running = defined and await ctx.hv.state(name) == PowerState.RUNNING
    if record is None and not (wanted(spec) and running and ctx.hv.live_overlays):
        files, shared = await _capture(ctx, plain, name if defined else None)
        return files, shared, []
    if record is None:  # first attempt: capture, record, then make the overlays
        files, shared = await _capture(ctx, plain, name)
        overlays = {o.target or "": o.path for o in wanted(spec)}
        record = markers.PreCopy(transfer=spec.transfer_id, overlays=overlays)
        await ctx.check_fence(spec)
        await asyncio.to_thread(markers.write_precopy, ctx.root, rel, record)
    else:  # resumed: the definition captured before the overlays is the one that moves
        files, shared = await _capture(ctx, plain, None)
    if running:
        await add_overlays(ctx, spec, name, record.overlays)
    sent = list(record.sent)
    live = [f for f in files if f.role not in AFTER_POWER_OFF]
    if not sent and running:
        sent = await wholevm.send(ctx.root, live, transfer=ctx.transfer, peer=peer,
                                  shared=shared, progress=ctx.files,
                                  stall=ctx.checksum_stall)
        await asyncio.to_thread(markers.write_precopy, ctx.root, rel,
                                record.with_sent(sent))
    made = [o for o in wanted(spec) if confine(ctx.root, o.path).exists()]
    if not sent:  # the VM went off before the live copy ended: all of it now
        return files + made, shared, []
    return [f for f in files if f.role in AFTER_POWER_OFF] + made, shared, sent


async def add_overlays(ctx: StepContext, spec: HostTaskSpec, name: str,
                        overlays: Mapping[str, str]) -> None:
    """Put the recorded overlays on the running VM unless they are there already."""
    tops = await ctx.hv.disk_tops(name)
    mine = {t: confine(ctx.root, p) for t, p in overlays.items()}
    if all(tops.get(t) == p for t, p in mine.items()):
        return
    if any(tops.get(t) == p for t, p in mine.items()):
        raise StepError(f"{name} has only some of its pre-copy overlays",
                        retryable=False)
    for p in mine.values():  # left by a snapshot that failed: nothing refers to them
        markers.remove(p)
    await ctx.check_fence(spec)
    await ctx.hv.add_overlays(name, mine)
    log.info("%s: %d disk(s) frozen under overlays for the live copy", name, len(mine))


async def merge_back(ctx: StepContext, name: str, rel: str) -> None:
    """RestoreSource, the VM running: merge each pre-copy overlay back into its disk
    (live commit), delete each one the guest's chains no longer name, and forget the
    record once all are gone. StepError (retryable) if any stays: the record too."""
    record = await asyncio.to_thread(markers.read_precopy, ctx.root, rel)
    if record is None:
        return
    failed: list[str] = []
    for target, ov in record.overlays.items():
        path = confine(ctx.root, ov)
        chain = (await ctx.hv.disk_chains(name)).get(target, [])
        if chain and chain[0] == path:
            try:
                await ctx.hv.commit_top(name, target)
            except HypervisorError as e:
                log.warning("%s: merging %s back failed: %s", name, ov, e)
            chain = (await ctx.hv.disk_chains(name)).get(target, [])
        if path in chain:  # the guest still reads or writes it: it stays
            below = chain[chain.index(path) + 1:] or [path]
            failed.append(f"{target} still on {Path(ov).name} ({_free(below[0])} free "
                          f"where {below[0].name} is)")
            continue
        markers.remove(path)
    if failed:
        raise StepError(f"{name} runs on its source again, but its pre-copy overlays "
                        f"could not be merged back: {'; '.join(failed)}. They and their "
                        "record stay (the guest writes there); the next attempt merges "
                        "again", retryable=True)
    markers.remove_precopy(ctx.root, rel)


async def merge_offline(ctx: StepContext, rel: str) -> None:
    """RestoreSource, the domain gone: commit the overlays before the captured
    definition (which names the disks below them) is defined again."""
    record = await asyncio.to_thread(markers.read_precopy, ctx.root, rel)
    if record is None:
        return
    for ov in record.overlays.values():
        await asyncio.to_thread(commit_offline, ctx.root, ov)
    markers.remove_precopy(ctx.root, rel)

