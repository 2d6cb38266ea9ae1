"""Host registration: what this host offers (capacity, endpoint, key) and its heartbeat.

Capacity comes from the hypervisor (CPUs, memory) and from the storage root's filesystem
(``statvfs``); the endpoint and host key come from the migration service. The heartbeat
keeps ``status.heartbeat`` fresh and ``ready`` true; a clean stop sets ``ready`` false.
Only status fields the agent owns are ever written (see ``kube``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vmresize.agent import metrics
from vmresize.agent.errors import AgentError, KubeNotFoundError
from vmresize.agent.hypervisor.protocol import Hypervisor
from vmresize.agent.kube.client import AgentKube, utcnow
from vmresize.agent.transfer import throttle
from vmresize.api.host import HostStatus, MigrationEndpoint
from vmresize.api.meta import Condition, Resources, set_condition

log = logging.getLogger(__name__)
GIB = 1024 ** 3
MIN_HEARTBEAT_SECONDS = 1.0
"""Heartbeats faster than this would only load the API server."""


def agent_version() -> str:
    """The installed vmresize package version, or ``0.0.0+unknown`` when running from an uninstalled
    tree."""
    try:
        return version("vmresize")
    except PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass(frozen=True)
class Registration:
    """Facts about this agent that go into its Host status."""

    host: str
    storage_root: Path
    address: str
    port: int
    host_key: str
    conditions: tuple[Condition, ...] = ()
    """Conditions of the agent's own, published with every heartbeat (TransferFastPath)."""
    bandwidth_mibps: int | None = None
    """The chart's default ``spec.migrationBandwidthMiBps`` of a Host this agent creates."""


def capacity(hv: Hypervisor, storage_root: Path) -> Resources:
    """Host vCPUs and memory from the hypervisor, and the size of the filesystem holding the storage
    root (GiB)."""
    cap = hv.capacity()
    st = os.statvfs(storage_root)
    return Resources(vcpus=cap.vcpus, memory_mib=cap.memory_mib,
                     disk_gib=st.f_blocks * st.f_frsize // GIB)


def host_status(reg: Registration, hv: Hypervisor, *, ready: bool,
                conditions: list[Condition]) -> dict[str, Any]:
    """The agent-owned part of ``Host.status`` as a merge patch (no allocations)."""
    now = utcnow()
    cond = Condition(type="Ready", status="True" if ready else "False",
                     reason="AgentRunning" if ready else "AgentStopped",
                     message="the agent is running" if ready else "the agent stopped cleanly")
    status = HostStatus(
        capacity=capacity(hv, reg.storage_root),
        storage_root=str(reg.storage_root),
        migration_endpoint=MigrationEndpoint(address=reg.address, port=reg.port),
        host_key=reg.host_key, heartbeat=now, ready=ready, agent_version=agent_version(),
        hypervisor=hv.uri, conditions=_with(conditions, (cond, *reg.conditions), now))
    doc = status.wire()
    doc.pop("allocations", None)  # the operator's
    doc.pop("orphans", None)      # the operator's (the agent only marks one cleaned)
    return doc


def _with(conditions: list[Condition], new: tuple[Condition, ...],
          now: datetime) -> list[Condition]:
    for cond in new:
        conditions = set_condition(conditions, cond, now)
    return conditions


class Registrar:
    """Registers the Host and keeps its heartbeat."""

    def __init__(self, kube: AgentKube, hv: Hypervisor, reg: Registration) -> None:
        self.kube, self.hv, self.reg = kube, hv, reg
        self._conditions: list[Condition] = []

    async def _report(self, *, ready: bool) -> None:
        doc = await asyncio.to_thread(host_status, self.reg, self.hv, ready=ready,
                                      conditions=self._conditions)
        await asyncio.to_thread(self.kube.patch_host_status, self.reg.host, doc)
        self._conditions = [Condition.model_validate(c) for c in doc.get("conditions", [])]

    async def register(self) -> None:
        """Create the Host if needed (spec defaults, once) and publish the status."""
        host = await asyncio.to_thread(self.kube.ensure_host, self.reg.host,
                                       bandwidth_mibps=self.reg.bandwidth_mibps)
        # the shared buckets (send, receive) start at the Host's limit; each MigrateDisk
        # task this agent runs as the source brings it anew
        throttle.set_host_limit(host.spec.migration_bandwidth_mibps)
        self._conditions = list(host.status.conditions) if host.status else []
        await self._report(ready=True)

    async def heartbeat_forever(self, interval: float) -> None:
        """Publish the status every ``interval`` seconds (at least 1 s) until cancelled; a deleted
        Host is registered again, and failures are logged, never raised."""
        interval = max(MIN_HEARTBEAT_SECONDS, interval)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._report(ready=True)
            except KubeNotFoundError:  # an admin deleted the Host: register it again
                log.warning("Host %s is gone; registering it again", self.reg.host)
                try:
                    await self.register()
                except (AgentError, OSError) as e:
                    log.warning("re-registration of %s failed: %s", self.reg.host, e)
            except (AgentError, OSError) as e:
                metrics.count_error(e)
                log.warning("heartbeat of %s failed: %s", self.reg.host, e)

    async def mark_stopped(self) -> None:
        """Publish ``ready: false`` on a clean stop; a failure is only logged."""
        try:
            await self._report(ready=False)
        except (AgentError, OSError) as e:
            log.warning("could not mark %s not ready: %s", self.reg.host, e)
