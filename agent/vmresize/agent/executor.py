"""Carries out one HostTask step on this host: the steps' one entry point.

It gets a Hypervisor, a storage root, a Transfer (the disk copy seam) and a Fence, and
knows nothing of Kubernetes. :meth:`Executor.run` checks the task is for this host, makes
the attempt's :class:`~vmresize.agent.steps.context.StepContext` (the hypervisor behind
its deadlines, :mod:`vmresize.agent.hypervisor.timed`), looks the step up in the dispatch
table (:data:`vmresize.agent.steps.table.STEPS`) and turns every agent error into a
:class:`StepError` that keeps its retryability.

Every step is idempotent and resumable. What a crash could leave half-done is made
observable on disk, under the storage root, next to the disk it concerns:

* new disks are built under a temporary name and renamed into place (``vmfiles.disks``);
* the power-off time, the verified checksum, the held source definition and what
  pre-copy did (``steps.precopy``) are records next to the disk (``vmfiles.markers``).

The source disk is only read between power-off and Confirm (invariant 1); Finish starts
only a domain on a disk whose disk checksum (:mod:`vmresize.agent.transfer.sparse`) is the
source's (invariant 2).

Fencing (invariant 7): MigrateDisk's power-off, Finish's start, Confirm, CleanupDest and
Destroy act only once the :data:`Fence` (the owner's status) names this very task, checked
right before; HealthCheck checks it before every probe. Every libvirt call has a deadline,
and so has every checksum's progress. No domain starts that an admin abandoned on this
host (:mod:`orphans`): the :data:`OrphanFence` is asked right before every start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vmresize.agent import orphans
from vmresize.agent.errors import AgentError, StepError, TaskRefusedError
from vmresize.agent.hypervisor.protocol import Hypervisor
from vmresize.agent.hypervisor.timed import TimedHypervisor
from vmresize.agent.steps.context import (
    Fence,
    Network,
    OrphanFence,
    StepContext,
    StepOutcome,
)
from vmresize.agent.steps.table import STEPS
from vmresize.agent.transfer.seam import ProgressFn, StepBandwidth, StepProgress, Transfer
from vmresize.agent.vmfiles.moving import CHECKSUM_STALL_SECONDS
from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import HostTaskSpec, TaskAction

__all__ = ["Executor", "Fence", "OrphanFence", "StepOutcome", "TaskRefusedError"]

HV_CALL_TIMEOUT = 120.0
"""Bound on one libvirt call (the settings' default); longer is a hung hypervisor."""


async def _no_orphans(name: str) -> str | None:
    return None


class Executor:
    """Runs HostTask steps for one host (see the module docstring)."""

    def __init__(self, *, host: str, hypervisor: Hypervisor, storage_root: Path,
                 transfer: Transfer, fence: Fence,
                 wall_clock: Callable[[], float] = time.time,
                 call_timeout: float = HV_CALL_TIMEOUT,
                 checksum_stall: float = CHECKSUM_STALL_SECONDS,
                 probe_networks: Sequence[Network] = (),
                 orphaned: OrphanFence = _no_orphans) -> None:
        self.host = host
        self.hv = hypervisor
        self.root = storage_root.resolve(strict=True)
        self.transfer = transfer
        self.fence = fence
        self.call_timeout = call_timeout
        self.checksum_stall = checksum_stall
        self.probe_networks = probe_networks
        self.orphaned = orphaned
        self.wall_clock = wall_clock

    def context(self, *, task_name: str = "", progress: ProgressFn | None = None
                ) -> StepContext:
        """One attempt's context, made of this host's parts as they are now."""
        return StepContext(
            host=self.host, root=self.root, hv=TimedHypervisor(self.hv, self.call_timeout),
            transfer=self.transfer, fence=self.fence, orphaned=self.orphaned,
            now=self.wall_clock, checksum_stall=self.checksum_stall,
            probe_networks=self.probe_networks, task_name=task_name, progress=progress,
            files=StepProgress(progress))

    async def run(self, spec: HostTaskSpec, *, task_name: str = "",
                  progress: ProgressFn | None = None) -> StepOutcome:
        """Carry out ``spec`` (the HostTask ``task_name``); raises :class:`StepError` (every
        other :class:`AgentError` is converted, keeping its retryability)."""
        if spec.host != self.host:
            raise TaskRefusedError(f"task is for host {spec.host!r}, this agent is {self.host!r}")
        ctx = self.context(task_name=task_name, progress=progress)
        try:
            # one connection to the peer per step; a MigrateDisk's bandwidth limits
            bw = (StepBandwidth(spec.bandwidth_mibps, spec.host_bandwidth_mibps)
                  if spec.action is TaskAction.MIGRATE_DISK else None)
            async with self.transfer.step(bw):
                return await STEPS[spec.action](ctx, spec)
        except StepError:
            raise
        except AgentError as e:
            raise StepError(f"{spec.action.value}: {e}", retryable=e.retryable) from e
        except OSError as e:
            raise StepError(f"{spec.action.value}: {e}", retryable=True) from e

    async def reap_orphan(self, orphan: OrphanCopy) -> str:
        """Destroy an abandoned copy on this host and delete its directory (idempotent)."""
        return await orphans.reap(self.context().hv, self.root, orphan)
