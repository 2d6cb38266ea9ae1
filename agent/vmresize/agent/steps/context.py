"""What every step is given, and what it returns: :class:`StepContext`, :class:`StepOutcome`.

A step is a plain function ``(StepContext, HostTaskSpec) -> StepOutcome``
(:data:`Step`). The context carries the host's parts, each behind its narrow seam: the
storage root, the time-limited hypervisor (:mod:`vmresize.agent.hypervisor.timed`), the
transfer, the owner's fence, the fence against abandoned copies, the clock and the
checksum's stall bound; and this attempt's task name and progress. No step reaches past
it to Kubernetes, and no step holds an unbounded libvirt call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from vmresize.agent.errors import FencedError, StepError, TaskRefusedError
from vmresize.agent.hypervisor.timed import TimedHypervisor
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import ProgressFn, StepProgress, Transfer
from vmresize.agent.vmfiles import disks
from vmresize.api.hosttask import HostTaskSpec, TaskAction, TaskResult

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SERIAL_LOG = "serial.log"

Fence = Callable[[HostTaskSpec, str], Awaitable[str | None]]
"""``(spec, task name) -> None`` if the owner names this task, else why; StepError: unknown."""

OrphanFence = Callable[[str], Awaitable[str | None]]
"""``domain name -> None`` if it may start here, else why (a copy an admin abandoned on this
host, :mod:`vmresize.agent.orphans`); StepError: unknown."""


@dataclass(frozen=True)
class StepOutcome:
    """A finished step: its result and a sentence for people."""

    result: TaskResult
    message: str


@dataclass(frozen=True)
class StepContext:
    """One attempt of one step on this host (see the module docstring)."""

    host: str
    root: Path
    hv: TimedHypervisor
    transfer: Transfer
    fence: Fence
    orphaned: OrphanFence
    now: Callable[[], float]
    """The wall clock (the downtime's ends are wall-clock times in the task's result)."""
    checksum_stall: float
    """A checksum that reads nothing for this long fails (a failing or hung disk)."""
    probe_networks: Sequence[Network] = ()
    task_name: str = ""
    progress: ProgressFn | None = None
    files: StepProgress = field(default_factory=lambda: StepProgress(None))
    """The same progress, added up over the files the step sends."""

    async def check_fence(self, spec: HostTaskSpec) -> None:
        """Immediately before a destructive act: proceed only if the owner names the task."""
        why = await self.fence(spec, self.task_name)
        if why is not None:
            raise FencedError(f"fenced: the owner no longer asks for this step ({why})")

    async def refuse_orphan(self, name: str) -> None:
        """StepError (permanent) if ``name`` is a copy an admin abandoned on this host."""
        why = await self.orphaned(name)
        if why is not None:
            raise StepError(f"refusing to start: {why}", retryable=False)

    async def start(self, name: str) -> None:
        """Start ``name``, unless it is a copy an admin abandoned on this host."""
        await self.refuse_orphan(name)
        await self.hv.start(name)

    def abs(self, rel: str) -> Path:
        """``rel`` below the storage root (:func:`confine`: nothing escapes it)."""
        return confine(self.root, rel)

    def sidecar(self, rel: str, suffix: str) -> Path:
        """A record kept beside the file ``rel``."""
        return confine(self.root, rel + suffix)

    def serial_log(self, rel: str) -> Path:
        """The guest's serial console log, in the directory of the disk ``rel``."""
        return self.abs(rel).parent / SERIAL_LOG

    async def describe(self, name: str, rel: str, fmt: str = "qcow2") -> TaskResult:
        """The domain as a task result reports it: size, power state, root disk."""
        size = await self.hv.get_size(name)
        state = await self.hv.state(name)
        virtual = disks.info(self.root, rel, fmt).virtual_size
        # Rounded up: a disk of 1.5 GiB needs 2 GiB wherever it goes (Prepare's bound).
        return TaskResult(domain_name=name, disk_path=rel, vcpus=size.vcpus,
                          memory_mib=size.memory_mib, disk_gib=-(-virtual // disks.GIB),
                          size_bytes=self.abs(rel).stat().st_size, power_state=state.value)


Step = Callable[[StepContext, HostTaskSpec], Awaitable[StepOutcome]]
"""One step: what a :class:`TaskAction` asks of this host."""


def need(value: T | None, what: str, action: TaskAction) -> T:
    """``value``, or TaskRefusedError naming the field of the task that lacks it."""
    if value is None or value == "":
        raise TaskRefusedError(f"{action.value} needs spec.{what}")
    return value


def as_datetime(wall_clock: float) -> datetime:
    """A wall-clock time as task results carry it (the downtime's ends)."""
    return datetime.fromtimestamp(wall_clock, tz=UTC)
