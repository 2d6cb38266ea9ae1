"""Carries out one HostTask step on this host: the agent's domain logic.

Pure-ish by construction: it gets a :class:`Hypervisor`, a storage root and a
:class:`Transfer` (the disk copy seam) as parameters and knows nothing of Kubernetes, so
unit tests drive it with libvirt ``test:///default`` and temp files.

Every step is idempotent and resumable. What a crash could leave half-done is made
observable on disk, under the storage root, next to the disk it concerns:

* new disks are built under a temporary name and renamed into place (``disks``);
* ``<disk>.poweroff`` holds the wall-clock time the source VM was asked to power off, so a
  resumed MigrateDisk still reports the real downtime;
* ``<disk>.verified`` holds the checksum Finish verified *before* growing the disk, so a
  resumed Finish does not mistake its own grown disk for a corrupt copy.

The source disk is only ever read between power-off and Confirm (invariant 1), and Finish
starts nothing from a disk whose sha256 differs from the source's (invariant 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vmresize.agent import disks
from vmresize.agent.errors import (
    AgentError,
    CopyChecksumMismatch,
    DomainNotFound,
    InsufficientSpace,
    StepError,
    TaskRefused,
    TransferRefused,
)
from vmresize.agent.hypervisor.protocol import DomainSize, DomainSpec, Hypervisor, PowerState
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import ProgressFn, Transfer
from vmresize.agent.transfer.sparse import sha256_file
from vmresize.api.hosttask import HostTaskSpec, TaskAction, TaskFlavor, TaskResult

log = logging.getLogger(__name__)

T = TypeVar("T")
IMAGES_DIR = "images"
"""Base images live in ``<storage root>/images/``."""
POWEROFF_SUFFIX = ".poweroff"
VERIFIED_SUFFIX = ".verified"
SERIAL_LOG = "serial.log"
POWER_POLL_SECONDS = 0.2  # libvirt itself polls a dying QEMU every 0.2 s


@dataclass(frozen=True)
class StepOutcome:
    """A finished step: its result and a sentence for people."""

    result: TaskResult
    message: str


def _need(value: T | None, what: str, action: TaskAction) -> T:
    if value is None or value == "":
        raise TaskRefused(f"{action.value} needs spec.{what}")
    return value


class Executor:
    """Runs HostTask steps for one host (see the module docstring)."""

    def __init__(self, *, host: str, hypervisor: Hypervisor, storage_root: Path,
                 transfer: Transfer, wall_clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.hv = hypervisor
        self.root = storage_root.resolve(strict=True)
        self.transfer = transfer
        self._now = wall_clock

    async def run(self, spec: HostTaskSpec, *, progress: ProgressFn | None = None
                  ) -> StepOutcome:
        """Carry out ``spec``; raises :class:`StepError` (every other :class:`AgentError`
        is converted, keeping its retryability)."""
        if spec.host != self.host:
            raise TaskRefused(f"task is for host {spec.host!r}, this agent is {self.host!r}")
        steps: dict[TaskAction, Callable[[HostTaskSpec], Awaitable[StepOutcome]]] = {
            TaskAction.SPAWN: self._spawn,
            TaskAction.ADOPT: self._adopt,
            TaskAction.PREPARE: self._prepare,
            TaskAction.FINISH: self._finish,
            TaskAction.CONFIRM: self._delete_copy,
            TaskAction.CLEANUP_DEST: self._delete_copy,
            TaskAction.RESTORE_SOURCE: self._restore_source,
            TaskAction.DESTROY: self._delete_copy,
        }
        try:
            if spec.action == TaskAction.MIGRATE_DISK:
                return await self._migrate_disk(spec, progress)
            return await steps[spec.action](spec)
        except StepError:
            raise
        except AgentError as e:
            raise StepError(f"{spec.action.value}: {e}", retryable=e.retryable) from e
        except OSError as e:
            raise StepError(f"{spec.action.value}: {e}", retryable=True) from e

    # --- helpers -------------------------------------------------------------------------

    async def _hv(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    def _abs(self, rel: str) -> Path:
        return confine(self.root, rel)

    def _sidecar(self, rel: str, suffix: str) -> Path:
        return confine(self.root, rel + suffix)

    def _serial_log(self, rel: str) -> Path:
        return self._abs(rel).parent / SERIAL_LOG

    async def _describe(self, name: str, rel: str) -> TaskResult:
        size = await self._hv(self.hv.get_size, name)
        state = await self._hv(self.hv.state, name)
        virtual = disks.info(self.root, rel).virtual_size
        return TaskResult(domain_name=name, disk_path=rel, vcpus=size.vcpus,
                          memory_mib=size.memory_mib, disk_gib=virtual // disks.GIB,
                          size_bytes=self._abs(rel).stat().st_size, power_state=state.value)

    async def _define(self, name: str, rel: str, flavor: TaskFlavor) -> None:
        spec = DomainSpec(name=name, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib,
                          disk=self._abs(rel), serial_log=self._serial_log(rel))
        await self._hv(self.hv.define, spec)

    async def _power_off(self, name: str, grace: float, requested_at: float) -> None:
        """Graceful shutdown, then destroy once ``grace`` seconds have passed since the
        first request (``requested_at``, wall clock, kept across agent restarts)."""
        if await self._hv(self.hv.state, name) == PowerState.SHUTOFF:
            return
        await self._hv(self.hv.shutdown, name)
        loop = asyncio.get_running_loop()
        remaining = max(0.0, grace - max(0.0, self._now() - requested_at))
        deadline = loop.time() + remaining
        while loop.time() < deadline:
            if await self._hv(self.hv.state, name) == PowerState.SHUTOFF:
                return
            await asyncio.sleep(POWER_POLL_SECONDS)
        log.info("%s did not shut down within %.0fs; forcing it off", name, grace)
        await self._hv(self.hv.destroy, name)

    # --- steps ---------------------------------------------------------------------------

    async def _spawn(self, spec: HostTaskSpec) -> StepOutcome:
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
        if not await self._hv(self.hv.exists, name):
            await self._define(name, rel, flavor)
        await self._hv(self.hv.start, name)
        return StepOutcome(await self._describe(name, rel), f"spawned {name}")

    async def _adopt(self, spec: HostTaskSpec) -> StepOutcome:
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
        return StepOutcome(await self._describe(name, rel), f"adopted {name}")

    async def _prepare(self, spec: HostTaskSpec) -> StepOutcome:
        a = spec.action
        rel = _need(spec.disk_path, "diskPath", a)
        tid = _need(spec.transfer_id, "transferId", a)
        size = _need(spec.expected_bytes, "expectedBytes", a)
        final = self._abs(rel)
        known = self.transfer.received(tid)
        if known is None and final.exists():
            return StepOutcome(TaskResult(disk_path=rel), f"{rel} already received")
        if known is None:
            st = os.statvfs(self.root)
            free = st.f_bavail * st.f_frsize
            if free < size:
                raise InsufficientSpace(f"{free} bytes free under the storage root, "
                                        f"{size} needed")
            final.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.transfer.expect(tid, rel, size)
        except TransferRefused as e:
            raise TaskRefused(f"cannot accept {rel}: {e}") from e
        return StepOutcome(TaskResult(disk_path=rel, size_bytes=size),
                           f"ready to receive {rel}")

    async def _migrate_disk(self, spec: HostTaskSpec, progress: ProgressFn | None
                            ) -> StepOutcome:
        a = spec.action
        name = _need(spec.domain_name, "domainName", a)
        rel = _need(spec.disk_path, "diskPath", a)
        peer = _need(spec.peer, "peer", a)
        tid = _need(spec.transfer_id, "transferId", a)
        src = self._abs(rel)
        marker = self._sidecar(rel, POWEROFF_SUFFIX)
        if not marker.exists():
            marker.write_text(f"{self._now():.6f}\n")
        off_since = float(marker.read_text().strip())
        await self._power_off(name, float(spec.power_off_timeout_seconds), off_since)
        sent = await self.transfer.send(src=src, peer=peer, transfer_id=tid,
                                        progress=progress)
        downtime = max(0.0, self._now() - off_since)
        result = TaskResult(checksum=sent.checksum, size_bytes=sent.size_bytes,
                            downtime_seconds=round(downtime, 3), disk_path=rel,
                            domain_name=name, power_state=PowerState.SHUTOFF.value)
        return StepOutcome(result, f"sent {rel} to {peer.name} ({sent.size_bytes} bytes)")

    async def _finish(self, spec: HostTaskSpec) -> StepOutcome:
        a = spec.action
        name = _need(spec.domain_name, "domainName", a)
        rel = _need(spec.disk_path, "diskPath", a)
        flavor = _need(spec.flavor, "flavor", a)
        expected = _need(spec.expected_checksum, "expectedChecksum", a)
        verified = self._sidecar(rel, VERIFIED_SUFFIX)
        if not await self._hv(self.hv.exists, name):
            if not (verified.exists() and verified.read_text().strip() == expected):
                await self._verify(spec, rel, expected)
                verified.write_text(expected + "\n")
            await asyncio.to_thread(disks.grow, self.root, rel, flavor.disk_gib)
            await self._define(name, rel, flavor)
        size = await self._hv(self.hv.get_size, name)
        wanted = DomainSize(vcpus=flavor.vcpus, memory_mib=flavor.memory_mib)
        if size != wanted:
            await self._hv(self.hv.set_size, name, wanted)
        await self._hv(self.hv.start, name)
        if spec.transfer_id:
            self.transfer.forget(spec.transfer_id)
        with contextlib.suppress(FileNotFoundError):
            verified.unlink()
        result = await self._describe(name, rel)
        result.checksum = expected
        return StepOutcome(result, f"started {name} with {flavor.vcpus} vCPU, "
                                   f"{flavor.memory_mib} MiB, {flavor.disk_gib} GiB")

    async def _verify(self, spec: HostTaskSpec, rel: str, expected: str) -> None:
        path = self._abs(rel)
        if spec.transfer_id:
            state = self.transfer.received(spec.transfer_id)
            if state is not None and not state.complete:
                raise StepError(f"{rel} is not completely received yet", retryable=True)
        if not path.is_file():
            raise StepError(f"no disk at {rel}", retryable=True)
        actual = await asyncio.to_thread(sha256_file, path)
        if actual != expected:
            raise CopyChecksumMismatch(f"{rel} has sha256 {actual}, expected {expected}; "
                                   "refusing to start it")

    async def _delete_copy(self, spec: HostTaskSpec) -> StepOutcome:
        """Confirm (source), CleanupDest (destination), Destroy: domain and disk go."""
        if spec.domain_name:
            try:
                await self._hv(self.hv.destroy, spec.domain_name)
                await self._hv(self.hv.undefine, spec.domain_name)
            except DomainNotFound:
                pass
        if spec.transfer_id and spec.action == TaskAction.CLEANUP_DEST:
            self.transfer.forget(spec.transfer_id)
        if spec.disk_path:
            rel = spec.disk_path
            for extra in (POWEROFF_SUFFIX, VERIFIED_SUFFIX, ".partial", ".xfer"):
                with contextlib.suppress(FileNotFoundError):
                    self._sidecar(rel, extra).unlink()
            with contextlib.suppress(FileNotFoundError):
                self._serial_log(rel).unlink()
            await asyncio.to_thread(disks.remove, self.root, rel)
        what = spec.domain_name or spec.disk_path or "nothing"
        return StepOutcome(TaskResult(domain_name=spec.domain_name, disk_path=spec.disk_path,
                                      power_state="Deleted"), f"deleted {what}")

    async def _restore_source(self, spec: HostTaskSpec) -> StepOutcome:
        a = spec.action
        name = _need(spec.domain_name, "domainName", a)
        rel = _need(spec.disk_path, "diskPath", a)
        if spec.flavor is not None:
            old = DomainSize(vcpus=spec.flavor.vcpus, memory_mib=spec.flavor.memory_mib)
            if await self._hv(self.hv.get_size, name) != old:
                await self._hv(self.hv.set_size, name, old)
        await self._hv(self.hv.start, name)
        with contextlib.suppress(FileNotFoundError):
            self._sidecar(rel, POWEROFF_SUFFIX).unlink()
        return StepOutcome(await self._describe(name, rel), f"restarted {name} on its source")
