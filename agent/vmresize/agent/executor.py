"""Carries out one HostTask step on this host: the agent's domain logic.

It gets a Hypervisor, a storage root, a Transfer (the disk copy seam) and a Fence, and
knows nothing of Kubernetes.

Every step is idempotent and resumable. What a crash could leave half-done is made
observable on disk, under the storage root, next to the disk it concerns:

* new disks are built under a temporary name and renamed into place (``disks``);
* the power-off time, the verified checksum, the held source definition and what
  pre-copy did (``precopy``) are records next to the disk (``markers``).

The source disk is only read between power-off and Confirm (invariant 1); Finish starts
only a domain on a disk whose disk checksum (:mod:`vmresize.agent.transfer.sparse`) is the
source's (invariant 2).

Fencing (invariant 7): MigrateDisk's power-off, Finish's start, Confirm, CleanupDest and
Destroy act only once the :data:`Fence` (the owner's status) names this very task, checked
right before; HealthCheck (:mod:`health`) checks it before every probe. Every libvirt call
is bounded. No domain starts that an admin abandoned on this host (:mod:`orphans`): the
:data:`OrphanFence` is asked right before every start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vmresize.agent import (
    health,
    orphans,
    ownership,
    precopy,
    sourcehold,
    wholevm,
)
from vmresize.agent.errors import (
    AgentError,
    DomainNotFound,
    Fenced,
    FlavorRefused,
    HypervisorError,
    InsufficientSpace,
    StepError,
    TaskRefused,
    TransferRefused,
)
from vmresize.agent.hypervisor import domainxml
from vmresize.agent.hypervisor.domainxml import NewDisk
from vmresize.agent.hypervisor.protocol import DomainSize, DomainSpec, Hypervisor, PowerState
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import ProgressFn, StepProgress, Transfer
from vmresize.agent.vmfiles import disks, flavorfiles, markers, moving
from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import HostTaskSpec, PowerOff, TaskAction, TaskFlavor, TaskResult
from vmresize.api.vmdisks import VMDisk

log = logging.getLogger(__name__)
T = TypeVar("T")
IMAGES_DIR = "images"   # base images live in <storage root>/images/
SERIAL_LOG = "serial.log"
HV_CALL_TIMEOUT = 120.0   # bound on one libvirt call; longer is a hung hypervisor (retryable)

Fence = Callable[[HostTaskSpec, str], Awaitable[str | None]]
"""``(spec, task name) -> None`` if the owner names this task, else why; StepError: unknown."""

OrphanFence = Callable[[str], Awaitable[str | None]]
"""``domain name -> None`` if it may start here, else why (a copy an admin abandoned on this
host, :mod:`vmresize.agent.orphans`); StepError: unknown."""


async def _no_orphans(name: str) -> str | None:
    return None


@dataclass(frozen=True)
class _Call:
    """One attempt: the task's name (for the fence) and where progress goes."""

    task_name: str
    progress: ProgressFn | None
    fence: Callable[[], Awaitable[None]]   # the executor's fence check for this attempt
    files: StepProgress   # the same progress, added up over the files the step sends


@dataclass(frozen=True)
class StepOutcome:
    """A finished step: its result and a sentence for people."""

    result: TaskResult
    message: str


def _need(value: T | None, what: str, action: TaskAction) -> T:
    if value is None or value == "":
        raise TaskRefused(f"{action.value} needs spec.{what}")
    return value


class Executor(wholevm.WholeVMSteps, sourcehold.SourceSteps, health.HealthSteps,
               precopy.PreCopySteps):
    """Runs HostTask steps for one host (see the module docstring)."""

    def __init__(self, *, host: str, hypervisor: Hypervisor, storage_root: Path,
                 transfer: Transfer, fence: Fence,
                 wall_clock: Callable[[], float] = time.time,
                 call_timeout: float = HV_CALL_TIMEOUT,
                 probe_networks: Sequence[health.Network] = (),
                 orphaned: OrphanFence = _no_orphans) -> None:
        self.host = host
        self.hv = hypervisor
        self.root = storage_root.resolve(strict=True)
        self.transfer = transfer
        self.fence = fence
        self.call_timeout = call_timeout
        self._now = wall_clock
        self.probe_networks = probe_networks
        self.orphaned = orphaned

    async def run(self, spec: HostTaskSpec, *, task_name: str = "",
                  progress: ProgressFn | None = None) -> StepOutcome:
        """Carry out ``spec`` (the HostTask ``task_name``); raises :class:`StepError` (every
        other :class:`AgentError` is converted, keeping its retryability)."""
        if spec.host != self.host:
            raise TaskRefused(f"task is for host {spec.host!r}, this agent is {self.host!r}")
        call = _Call(task_name, progress, lambda: self._check_fence(spec, call),
                     StepProgress(progress))
        steps: dict[TaskAction, Callable[[HostTaskSpec, _Call], Awaitable[StepOutcome]]] = {
            TaskAction.SPAWN: self._spawn,
            TaskAction.ADOPT: self._adopt,
            TaskAction.PREPARE: self._prepare,
            TaskAction.FINISH: self._finish,
            TaskAction.CONFIRM: self._delete_copy,
            TaskAction.CLEANUP_DEST: self._delete_copy,
            TaskAction.RESTORE_SOURCE: self._restore_source,
            TaskAction.DESTROY: self._delete_copy,
            TaskAction.MIGRATE_DISK: self._migrate_disk,
            TaskAction.HEALTH_CHECK: self._health,
        }
        try:
            async with self.transfer.step():  # one connection to the peer per step
                return await steps[spec.action](spec, call)
        except StepError:
            raise
        except AgentError as e:
            raise StepError(f"{spec.action.value}: {e}", retryable=e.retryable) from e
        except OSError as e:
            raise StepError(f"{spec.action.value}: {e}", retryable=True) from e

    # --- helpers -------------------------------------------------------------------------

    async def _hv(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.call_timeout)
        except TimeoutError as e:  # the thread may stay stuck in libvirt; the step ends
            what = getattr(fn, "__name__", "call")
            raise HypervisorError(f"libvirt {what} did not answer within "
                                  f"{self.call_timeout:.0f}s", retryable=True) from e

    async def _check_fence(self, spec: HostTaskSpec, call: _Call) -> None:
        """Immediately before a destructive act: proceed only if the owner names the task."""
        why = await self.fence(spec, call.task_name)
        if why is not None:
            raise Fenced(f"fenced: the owner no longer asks for this step ({why})")

    async def _start(self, name: str) -> None:
        """Start ``name``, unless it is a copy an admin abandoned on this host."""
        why = await self.orphaned(name)
        if why is not None:
            raise StepError(f"refusing to start: {why}", retryable=False)
        await self._hv(self.hv.start, name)

    async def reap_orphan(self, orphan: OrphanCopy) -> str:
        """Destroy an abandoned copy on this host and delete its directory (idempotent)."""
        return await orphans.reap(self.hv, self._hv, self.root, orphan)

    async def _health(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        return StepOutcome(*await self._health_check(spec, call.task_name))

    def _abs(self, rel: str) -> Path:
        return confine(self.root, rel)

    def _sidecar(self, rel: str, suffix: str) -> Path:
        return confine(self.root, rel + suffix)

    def _serial_log(self, rel: str) -> Path:
        return self._abs(rel).parent / SERIAL_LOG

    async def _describe(self, name: str, rel: str, fmt: str = "qcow2") -> TaskResult:
        size = await self._hv(self.hv.get_size, name)
        state = await self._hv(self.hv.state, name)
        virtual = disks.info(self.root, rel, fmt).virtual_size
        # Rounded up: a disk of 1.5 GiB needs 2 GiB wherever it goes (Prepare's bound).
        return TaskResult(domain_name=name, disk_path=rel, vcpus=size.vcpus,
                          memory_mib=size.memory_mib, disk_gib=-(-virtual // disks.GIB),
                          size_bytes=self._abs(rel).stat().st_size, power_state=state.value)

    # --- steps ---------------------------------------------------------------------------

    async def _spawn(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        a = spec.action
        name = _need(spec.domain_name, "domainName", a)
        rel = _need(spec.disk_path, "diskPath", a)
        flavor = _need(spec.flavor, "flavor", a)
        if spec.base_image:
            base = f"{IMAGES_DIR}/{spec.base_image}"
            await asyncio.to_thread(disks.create_from_base, self.root, rel, base,
                                    flavor.disk_gib)
        else:
            await asyncio.to_thread(disks.create_blank, self.root, rel, flavor.disk_gib,
                                    seed=spec.seed_pattern)
        files, extra = await asyncio.to_thread(flavorfiles.spawn, self.root, rel, flavor)
        await self._define_for(name, rel, flavor, spec, extra)
        await self._start(name)
        result = await self._describe(name, rel)
        result.disks = files
        return StepOutcome(result, f"spawned {name} with {len(files)} disk(s)")

    async def _define_for(self, name: str, rel: str, flavor: TaskFlavor, spec: HostTaskSpec,
                          extra: tuple[NewDisk, ...] = ()) -> None:
        """Define ``name`` on ``rel`` unless it exists on ``rel``, and record the Instance
        as its owner; one on another disk is never started: redefined onto ours while off
        if the Instance owns it, refused otherwise (it is not ours)."""
        if await self._hv(self.hv.exists, name):
            disk = await self._hv(self.hv.disk_path, name)
            disk = disk.resolve() if disk is not None else None
            if disk == self._abs(rel):   # our disk (its path carries the Instance's UID)
                await ownership.stamp(self.hv, self._hv, spec, name)
                return
            if await self._hv(self.hv.state, name) != PowerState.SHUTOFF:
                raise TaskRefused(f"a domain named {name} already runs from {disk}, not "
                                  f"from {rel}; refusing to touch it")
            await ownership.check(self.hv, self._hv, spec, name, "redefine")
            log.warning("domain %s pointed at %s; redefining it on %s", name, disk, rel)
            await self._hv(self.hv.undefine, name)
        await self._hv(self.hv.define, DomainSpec(
            name=name, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib, disk=self._abs(rel),
            serial_log=self._serial_log(rel), extra_disks=extra,
            interfaces=tuple(spec.interfaces)))
        await ownership.stamp(self.hv, self._hv, spec, name)

    async def _adopt(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        name = _need(spec.domain_name, "domainName", spec.action)
        disk = await self._hv(self.hv.disk_path, name)
        if disk is None:
            raise TaskRefused(f"domain {name} has no file-backed disk")
        resolved = disk.resolve()
        if not resolved.is_relative_to(self.root):
            raise TaskRefused(f"disk of {name} is outside the storage root: {disk}")
        rel = str(resolved.relative_to(self.root))
        self._abs(rel)  # the same confinement every other step applies
        # The domain remembers who adopted it: a second Instance (another tenant's, or one
        # racing the first past the operator's check) is refused. Re-running our own Adopt
        # after a crash finds our UID and goes on.
        owner = await self._hv(self.hv.owner, name)
        if owner and owner != spec.owner_uid:
            raise TaskRefused(f"domain {name} is owned by the Instance with UID {owner}; "
                              "a domain that an Instance owns is never adopted again")
        if spec.owner_uid and owner != spec.owner_uid:
            await self._hv(self.hv.set_owner, name, spec.owner_uid)
        files, why, fmt = await asyncio.to_thread(wholevm.adopted, self.hv, self.root, name)
        result = await self._describe(name, rel, fmt)
        result.disks, result.unmovable = files or None, [why] if why else None
        return StepOutcome(result, f"adopted {name}" + (f"; {why}" if why else ""))

    async def _prepare(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        if spec.disks:
            return StepOutcome(*await self._prepare_whole(spec))
        a = spec.action
        rel = _need(spec.disk_path, "diskPath", a)
        tid = _need(spec.transfer_id, "transferId", a)
        size = _need(spec.expected_bytes, "expectedBytes", a)
        final = self._abs(rel)
        known = self.transfer.received(tid)
        if known is None and final.exists():
            return StepOutcome(TaskResult(disk_path=rel), f"{rel} already received")
        if known is None:
            final.parent.mkdir(parents=True, exist_ok=True)
            # The filesystem the disk lands on (the instance directory may be a mount of
            # its own), less what transfers already accepted there may still write.
            st = os.statvfs(final.parent)
            free = st.f_bavail * st.f_frsize
            promised = self.transfer.pending_bytes(final.parent)
            if free - promised < size:
                raise InsufficientSpace(
                    f"{free} bytes free where {rel} lands, {promised} of them promised to "
                    f"transfers in flight; {size} needed")
        try:
            self.transfer.expect(tid, rel, size)
        except TransferRefused as e:
            raise TaskRefused(f"cannot accept {rel}: {e}") from e
        return StepOutcome(TaskResult(disk_path=rel, size_bytes=size),
                           f"ready to receive {rel}")

    async def _refuse_flavor(self, name: str, flavor: TaskFlavor) -> None:
        """MigrateDisk, the VM still defined: refuse, before anything is done to it, a
        flavor that Finish's rewrite of this very definition would refuse (invariant 10)."""
        xml = await self._hv(self.hv.export, name)
        why = domainxml.rewrite_refusal(xml, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib)
        if why is not None:
            raise FlavorRefused(f"{name} cannot take {flavor.vcpus} vCPU and "
                                f"{flavor.memory_mib} MiB: {why}; refused before any "
                                "power-off, the VM was not touched")

    async def _migrate_disk(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        a = spec.action
        name = _need(spec.domain_name, "domainName", a)
        rel = _need(spec.disk_path, "diskPath", a)
        peer = _need(spec.peer, "peer", a)
        tid = _need(spec.transfer_id, "transferId", a)
        defined = await self._hv(self.hv.exists, name)
        files, shared, live, moved = list[VMDisk](), False, list[VMDisk](), list[VMDisk]()
        if spec.disks:  # the whole VM: listed, checked, captured (pre-copied if it runs
            # and the task lists overlays) before any power-off
            if defined and spec.flavor is not None:
                await self._refuse_flavor(name, spec.flavor)
            files, shared, live = await self._before_power_off(spec, call, name, peer, defined)
            rel = wholevm.root_disk(live or files).path
        elif defined:
            wholevm.refuse_unmovable(await self._hv(self.hv.export, name), self.root, name)
        held = self._sidecar(rel, markers.HELD_SUFFIX)
        marker = self._sidecar(rel, markers.POWEROFF_SUFFIX)
        if defined:
            await self._check_fence(spec, call)
            # The Instance's own domain since its Spawn or Adopt: one that records no
            # owner (made before owners were recorded) is stamped, another's is refused.
            await ownership.check(self.hv, self._hv, spec, name, "power off and hold",
                                  stamp_unowned=True)
            tag = f"{spec.owner_uid or '-'}/{tid}"
            grace = float(spec.power_off_timeout_seconds)
            off_since = markers.power_off_since(marker, tag, self._now(), grace)
            off = await self._power_off_and_hold(name, grace, off_since, held)
            how: PowerOff | None = off.how
            stopped = markers.stopped_since(marker, tag, off.at)
        elif markers.read(held) is not None:  # resumed: already off and held
            rec = markers.PowerOff.parse(markers.read(marker)) or markers.PowerOff("", self._now())
            how, off_since = None, rec.requested_at
            stopped = rec.stopped_at if rec.stopped_at is not None else rec.requested_at
        else:
            raise StepError(f"{a.value}: domain {name} not found", retryable=False)
        if files or live:
            moved = live + await wholevm.send(self.root, files, transfer=self.transfer,
                                              peer=peer, shared=shared, progress=call.files)
            checksum, size = wholevm.root_disk(moved).checksum, sum(f.size_bytes for f in moved)
        else:
            sent = await self.transfer.send(src=self._abs(rel), peer=peer, transfer_id=tid,
                                            progress=call.progress)
            checksum, size = sent.checksum, sent.size_bytes
        result = TaskResult(checksum=checksum, size_bytes=size, disks=moved or None,
                            shared_storage=shared if moved else None, power_off=how,
                            downtime_seconds=round(max(0.0, self._now() - stopped), 3),
                            power_off_wait_seconds=round(max(0.0, stopped - off_since), 3),
                            stopped_at=wholevm.at(stopped),
                            disk_path=rel, powered_off_at=wholevm.at(off_since), domain_name=name,
                            power_state=PowerState.SHUTOFF.value)
        to = "within the shared storage" if shared else f"to {peer.name}"
        to += f", {len(live)} of them while the VM ran" if live else ""
        return StepOutcome(result, f"{sourcehold.said(how)}sent {len(moved) or 1} file(s) {to}")

    async def _finish(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        name = _need(spec.domain_name, "domainName", spec.action)
        flavor = _need(spec.flavor, "flavor", spec.action)
        if spec.disks:
            async def fence() -> None:
                await call.fence()
                why = await self.orphaned(name)
                if why is not None:
                    raise StepError(f"refusing to start: {why}", retryable=False)
            return StepOutcome(*await self._finish_whole(spec, name, flavor, fence))
        rel = _need(spec.disk_path, "diskPath", spec.action)
        expected = _need(spec.expected_checksum, "expectedChecksum", spec.action)
        verified = self._sidecar(rel, markers.VERIFIED_SUFFIX)
        # Whatever exists already, the disk must be the verified one (invariant 2): the
        # record is written before the grow and kept while the copy lives here.
        if not markers.verified_is(verified, expected):
            await self._verify(spec, rel, expected)
            await asyncio.to_thread(markers.write_atomic, verified, expected + "\n")
        await asyncio.to_thread(disks.grow, self.root, rel, flavor.disk_gib)
        await self._define_for(name, rel, flavor, spec)
        size = await self._hv(self.hv.get_size, name)
        wanted = DomainSize(vcpus=flavor.vcpus, memory_mib=flavor.memory_mib)
        if size != wanted:
            await self._hv(self.hv.set_size, name, wanted)
        await self._check_fence(spec, call)   # a Finish frozen through a rollback: no 2nd copy
        await self._start(name)
        started = wholevm.at(self._now())
        if spec.transfer_id:
            self.transfer.forget(spec.transfer_id)
        result = await self._describe(name, rel)
        result.checksum, result.started_at = expected, started
        return StepOutcome(result, f"started {name} with {flavor.vcpus} vCPU, "
                                   f"{flavor.memory_mib} MiB, {flavor.disk_gib} GiB")

    async def _verify(self, spec: HostTaskSpec, rel: str, expected: str) -> None:
        state = self.transfer.received(spec.transfer_id) if spec.transfer_id else None
        await moving.verify_file(self._abs(rel), rel, expected, state)

    async def _delete_copy(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        """Confirm (source), CleanupDest (destination), Destroy: domain and disk go."""
        name = spec.domain_name
        await self._check_fence(spec, call)
        exists = bool(name) and await self._hv(self.hv.exists, name)
        if name and exists and spec.action == TaskAction.CONFIRM \
                and await self._hv(self.hv.state, name) != PowerState.SHUTOFF:
            raise StepError(
                f"refusing to confirm: the source {name} runs on {self.host} although the "
                "resize holds it, so both copies run; shut down the copy to drop, then "
                "delete this HostTask so the operator creates it again", retryable=False)
        if name and exists:
            # CleanupDest acts on a name it never checked before: only our own copy goes.
            # Confirm and Destroy act on the Instance's own domain, which may predate
            # recorded owners: unowned is taken as ours there, another owner never is.
            await ownership.check(self.hv, self._hv, spec, name, spec.action.value,
                                  stamp_unowned=spec.action is not TaskAction.CLEANUP_DEST)
            try:
                await self._hv(self.hv.destroy, name)
                await self._hv(self.hv.undefine, name)
            except DomainNotFound:
                pass
        if spec.transfer_id and spec.action == TaskAction.CLEANUP_DEST:
            self.transfer.forget(spec.transfer_id)
        if spec.disks:
            await self._delete_whole(spec)
        elif spec.disk_path:
            rel = spec.disk_path
            for extra in (*markers.ALL_SUFFIXES, ".partial", ".xfer"):
                markers.remove(self._sidecar(rel, extra))
            markers.remove(self._serial_log(rel))
            await asyncio.to_thread(disks.remove, self.root, rel)
        what = name or spec.disk_path or "nothing"
        return StepOutcome(TaskResult(domain_name=name, disk_path=spec.disk_path,
                                      power_state="Deleted"), f"deleted {what}")

    async def _restore_source(self, spec: HostTaskSpec, call: _Call) -> StepOutcome:
        a = spec.action
        name = _need(spec.domain_name, "domainName", a)
        rel = _need(spec.disk_path, "diskPath", a)
        held = self._sidecar(rel, markers.HELD_SUFFIX)
        xml = markers.read(held)
        if xml is not None:  # the definition MigrateDisk moved aside, back exactly
            if not await self._hv(self.hv.exists, name):
                await self._hv(self.hv.define_xml, xml)
                await ownership.stamp(self.hv, self._hv, spec, name)
            markers.remove(held)
        elif not await self._hv(self.hv.exists, name):
            await self._merge_offline(rel)  # the captured definition names the disks below
            await self._define_captured(name, rel)
            await ownership.stamp(self.hv, self._hv, spec, name)
        # Resized and started below: only if it is ours (a namesake defined meanwhile is not;
        # one that records no owner is a source held before owners were recorded).
        await ownership.check(self.hv, self._hv, spec, name, "restore", stamp_unowned=True)
        # A power-off MigrateDisk asked for may still be under way in the guest (the step
        # cancelled or failed after the request): finished first, or the start below would
        # do nothing and the guest stop afterwards. Its record goes once the VM is off, so
        # a retry after the start never powers the restarted VM off again.
        marker = self._sidecar(rel, markers.POWEROFF_SUFFIX)
        how = await self._finish_power_off(name, marker, spec.owner_uid,
                                           float(spec.power_off_timeout_seconds))
        markers.remove(marker)
        if spec.flavor is not None:
            old = DomainSize(vcpus=spec.flavor.vcpus, memory_mib=spec.flavor.memory_mib)
            if await self._hv(self.hv.get_size, name) != old:
                await self._hv(self.hv.set_size, name, old)
        await self._start(name)
        await self._seen_running(name)
        await self._merge_back(name, rel)  # pre-copy's overlays, once the VM runs again
        fmt = wholevm.root_format(await self._hv(self.hv.export, name), self.root, rel)
        done = ("" if how in (None, PowerOff.ALREADY_OFF) else
                f"finished the power-off the move had begun ({how.value}); ")
        return StepOutcome(await self._describe(name, rel, fmt),
                           f"{done}restarted {name} on its source")
