"""Pre-copy: move a running VM's disks with a downtime that does not grow with them.

The mechanism is an external disk-only snapshot (:mod:`~vmresize.agent.hypervisor.blockjobs`):

1. VM running: every writable guest disk gets a qcow2 overlay beside it
   (``<disk>.vmresize-overlay.qcow2``, the task lists them with role ``Overlay``); from
   then on the guest writes only there and the disks below are frozen.
2. Every frozen file (disks, backing files, media, the definition captured before the
   overlays) is sent while the VM runs, checksummed as always.
3. The executor powers the VM off and holds it, as in the offline mode.
4. The overlays (what the guest wrote during the copy) and the UEFI variables are sent,
   checksummed. The chain as it stood at power-off, frozen disks plus overlays, stays on
   the source untouched until Confirm (invariant 1): the held definition names the
   overlays, so RestoreSource starts the VM on exactly that chain.
5. Destination (Finish): every file, overlays included, is verified against the
   source's sha256 before anything changes (invariant 2); then each overlay is re-linked
   onto the received disk and committed into it (:mod:`~vmresize.agent.vmfiles.overlays`), and
   Finish goes on as in the offline mode.

Rollback: RestoreSource (the VM running, or started again from the held definition)
merges each overlay back with a live commit and deletes it (:meth:`PreCopySteps._merge_back`);
if the domain is gone, the overlays are committed offline before the captured
definition (which names the disks below) is defined again. An overlay is deleted only
once the guest's chains, read again after the commit, no longer name it; a commit that
failed (no space or an I/O error on the disk below) leaves the overlay, which the guest
goes on writing to, and the record, so RestoreSource fails (retryable) and its next
attempt merges again.

Decide, record, act: ``<root disk>.precopy`` (JSON) is written before the overlays are
made and records the files sent live with their sha256, so an agent killed in any phase
resumes: overlays already in place are not made again, files already sent are not
hashed again. A VM that is off when MigrateDisk starts moves the offline way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from vmresize.agent import wholevm
from vmresize.agent.errors import HypervisorError, StepError
from vmresize.agent.hypervisor.protocol import Hypervisor, PowerState
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import Transfer
from vmresize.agent.vmfiles import markers
from vmresize.agent.vmfiles.overlays import commit_offline
from vmresize.api.hosttask import HostTaskSpec, PeerHost
from vmresize.api.vmdisks import DiskRole, VMDisk

log = logging.getLogger(__name__)
T = TypeVar("T")
PRECOPY_SUFFIX = markers.PRECOPY_SUFFIX
AFTER_POWER_OFF = (DiskRole.OVERLAY, DiskRole.NVRAM)
"""What the guest may still write while it runs: sent once it is off."""


def _record(root: Path, rel: str) -> Path:
    return confine(root, rel + PRECOPY_SUFFIX)


def read_record(root: Path, rel: str) -> dict[str, Any] | None:
    """The pre-copy record beside the root disk ``rel``, if any."""
    text = markers.read(_record(root, rel))
    if text is None:
        return None
    doc = json.loads(text)
    return doc if isinstance(doc, dict) else None


def _write_record(root: Path, rel: str, doc: dict[str, Any]) -> None:
    markers.write_atomic(_record(root, rel), json.dumps(doc, sort_keys=True) + "\n")


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


HvCall = Callable[..., Awaitable[Any]]


class PreCopySteps:
    """The executor's pre-copy parts (a mixin; the executor provides these attributes)."""

    root: Path
    hv: Hypervisor
    transfer: Transfer
    call_timeout: float

    async def _hv(self, fn: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    async def _check_fence(self, spec: HostTaskSpec, call: Any) -> None:
        raise NotImplementedError

    async def _before_power_off(self, spec: HostTaskSpec, call: Any, name: str,
                                peer: PeerHost, defined: bool
                                ) -> tuple[list[VMDisk], bool, list[VMDisk]]:
        """MigrateDisk up to the power-off: (files still to send, shared storage, files
        already sent). Offline mode: everything is still to send."""
        plain = spec.model_copy(update={"disks": [f for f in spec.disks
                                                  if f.role is not DiskRole.OVERLAY]})
        rel = wholevm.root_disk(plain.disks).path
        record = await asyncio.to_thread(read_record, self.root, rel)
        if record is not None and record.get("transfer") != spec.transfer_id:
            raise StepError(f"{rel} carries the pre-copy overlays of another move "
                            f"({record.get('transfer')}); RestoreSource merges them back",
                            retryable=False)
        running = defined and await self._hv(self.hv.state, name) == PowerState.RUNNING
        if record is None and not (wanted(spec) and running and self.hv.live_overlays):
            files, shared = await asyncio.to_thread(wholevm.capture, self.hv, self.root,
                                                    plain, defined=defined)
            return files, shared, []
        if record is None:  # first attempt: capture, record, then make the overlays
            files, shared = await asyncio.to_thread(wholevm.capture, self.hv, self.root,
                                                    plain, defined=True)
            overlays = {o.target or "": o.path for o in wanted(spec)}
            record = {"transfer": spec.transfer_id, "overlays": overlays, "sent": []}
            await self._check_fence(spec, call)
            await asyncio.to_thread(_write_record, self.root, rel, record)
        else:  # resumed: the definition captured before the overlays is the one that moves
            files, shared = await asyncio.to_thread(wholevm.capture, self.hv, self.root,
                                                    plain, defined=False)
        if running:
            await self._add_overlays(spec, call, name, record["overlays"])
        sent = [VMDisk.model_validate(d) for d in record.get("sent", [])]
        live = [f for f in files if f.role not in AFTER_POWER_OFF]
        if not sent and running:
            sent = await wholevm.send(self.root, live, transfer=self.transfer, peer=peer,
                                      shared=shared, progress=call.files)
            record["sent"] = [f.model_dump(mode="json", by_alias=True) for f in sent]
            await asyncio.to_thread(_write_record, self.root, rel, record)
        made = [o for o in wanted(spec) if confine(self.root, o.path).exists()]
        if not sent:  # the VM went off before the live copy ended: all of it now
            return files + made, shared, []
        return [f for f in files if f.role in AFTER_POWER_OFF] + made, shared, sent

    async def _add_overlays(self, spec: HostTaskSpec, call: Any, name: str,
                            overlays: dict[str, str]) -> None:
        """Put the recorded overlays on the running VM unless they are there already."""
        tops = await self._hv(self.hv.disk_tops, name)
        mine = {t: confine(self.root, p) for t, p in overlays.items()}
        if all(tops.get(t) == p for t, p in mine.items()):
            return
        if any(tops.get(t) == p for t, p in mine.items()):
            raise StepError(f"{name} has only some of its pre-copy overlays",
                            retryable=False)
        for p in mine.values():  # left by a snapshot that failed: nothing refers to them
            markers.remove(p)
        await self._check_fence(spec, call)
        await self._hv(self.hv.add_overlays, name, mine)
        log.info("%s: %d disk(s) frozen under overlays for the live copy", name, len(mine))

    async def _merge_back(self, name: str, rel: str) -> None:
        """RestoreSource, the VM running: merge each pre-copy overlay back into its disk
        (live commit), delete each one the guest's chains no longer name, and forget the
        record once all are gone. StepError (retryable) if any stays: the record too."""
        record = await asyncio.to_thread(read_record, self.root, rel)
        if record is None:
            return
        failed: list[str] = []
        for target, ov in record["overlays"].items():
            path = confine(self.root, ov)
            chain = (await self._hv(self.hv.disk_chains, name)).get(target, [])
            if chain and chain[0] == path:
                try:
                    await self._hv(self.hv.commit_top, name, target,
                                   self.call_timeout * 0.8)
                except HypervisorError as e:
                    log.warning("%s: merging %s back failed: %s", name, ov, e)
                chain = (await self._hv(self.hv.disk_chains, name)).get(target, [])
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
        markers.remove(_record(self.root, rel))

    async def _merge_offline(self, rel: str) -> None:
        """RestoreSource, the domain gone: commit the overlays before the captured
        definition (which names the disks below them) is defined again."""
        record = await asyncio.to_thread(read_record, self.root, rel)
        if record is None:
            return
        for ov in record["overlays"].values():
            await asyncio.to_thread(commit_offline, self.root, ov)
        markers.remove(_record(self.root, rel))
