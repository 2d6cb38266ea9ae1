"""The steps' hypervisor: every libvirt call runs in a thread and has a deadline.

A heartbeat proves the agent's loop is alive, not that a step moves: a libvirt call that
never returns (a hung QEMU monitor, a wedged storage pool) would hold a step, and a VM
that is off, for as long as the process lives. So the steps never hold a
:class:`Hypervisor`; they hold a :class:`TimedHypervisor`, whose every method is awaited
with a deadline (``VMRESIZE_LIBVIRT_CALL_TIMEOUT_SECONDS``). A call past it fails the step
with a retryable :class:`HypervisorError` that names the call. The thread stays stuck
in libvirt (Python cannot cancel it); the step ends, and the operator's watchdog and
retries take it from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vmresize.agent.errors import HypervisorError
from vmresize.agent.hypervisor.protocol import DomainSize, DomainSpec, Hypervisor, PowerState

T = TypeVar("T")
COMMIT_SHARE = 0.8
"""A live commit is given this share of the call's deadline to converge, so libvirt's own
timeout (which aborts the job cleanly) comes before ours (which only abandons the wait)."""


class TimedHypervisor:
    """The :class:`Hypervisor` methods the steps use, each async and bounded."""

    def __init__(self, hv: Hypervisor, timeout: float) -> None:
        self._hv = hv
        self.timeout = timeout

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.timeout)
        except TimeoutError as e:  # the thread may stay stuck in libvirt; the step ends
            what = getattr(fn, "__name__", "call")
            raise HypervisorError(f"libvirt {what} did not answer within "
                                  f"{self.timeout:.0f}s", retryable=True) from e

    @property
    def live_overlays(self) -> bool:
        """Whether pre-copy's overlays work here (a property of the adapter: no call)."""
        return self._hv.live_overlays

    async def define(self, spec: DomainSpec) -> None:
        """The adapter's ``define``, within the deadline."""
        await self._call(self._hv.define, spec)

    async def undefine(self, name: str) -> None:
        """The adapter's ``undefine``, within the deadline."""
        await self._call(self._hv.undefine, name)

    async def definition(self, name: str) -> str:
        """The adapter's ``definition``, within the deadline."""
        return await self._call(self._hv.definition, name)

    async def define_xml(self, xml: str) -> None:
        """The adapter's ``define_xml``, within the deadline."""
        await self._call(self._hv.define_xml, xml)

    async def start(self, name: str) -> None:
        """The adapter's ``start``, within the deadline."""
        await self._call(self._hv.start, name)

    async def shutdown(self, name: str) -> None:
        """The adapter's ``shutdown``, within the deadline."""
        await self._call(self._hv.shutdown, name)

    async def destroy(self, name: str) -> None:
        """The adapter's ``destroy``, within the deadline."""
        await self._call(self._hv.destroy, name)

    async def state(self, name: str) -> PowerState:
        """The adapter's ``state``, within the deadline."""
        return await self._call(self._hv.state, name)

    async def exists(self, name: str) -> bool:
        """The adapter's ``exists``, within the deadline."""
        return await self._call(self._hv.exists, name)

    async def get_size(self, name: str) -> DomainSize:
        """The adapter's ``get_size``, within the deadline."""
        return await self._call(self._hv.get_size, name)

    async def set_size(self, name: str, size: DomainSize) -> None:
        """The adapter's ``set_size``, within the deadline."""
        await self._call(self._hv.set_size, name, size)

    async def disk_path(self, name: str) -> Path | None:
        """The adapter's ``disk_path``, within the deadline."""
        return await self._call(self._hv.disk_path, name)

    async def export(self, name: str) -> str:
        """The adapter's ``export``, within the deadline."""
        return await self._call(self._hv.export, name)

    async def owner(self, name: str) -> str | None:
        """The adapter's ``owner``, within the deadline."""
        return await self._call(self._hv.owner, name)

    async def set_owner(self, name: str, owner_uid: str) -> None:
        """The adapter's ``set_owner``, within the deadline."""
        await self._call(self._hv.set_owner, name, owner_uid)

    async def guest_ping(self, name: str, timeout_seconds: int) -> None:
        """The adapter's ``guest_ping``, within the deadline."""
        await self._call(self._hv.guest_ping, name, timeout_seconds)

    async def disk_tops(self, name: str) -> dict[str, Path]:
        """The adapter's ``disk_tops``, within the deadline."""
        return await self._call(self._hv.disk_tops, name)

    async def disk_chains(self, name: str) -> dict[str, list[Path]]:
        """The adapter's ``disk_chains``, within the deadline."""
        return await self._call(self._hv.disk_chains, name)

    async def add_overlays(self, name: str, overlays: dict[str, Path]) -> None:
        """The adapter's ``add_overlays``, within the deadline."""
        await self._call(self._hv.add_overlays, name, overlays)

    async def commit_top(self, name: str, target: str) -> None:
        """The adapter's ``commit_top``, within the deadline."""
        await self._call(self._hv.commit_top, name, target, self.timeout * COMMIT_SHARE)
