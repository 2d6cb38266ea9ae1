"""``Host``: one hypervisor, registered by its agent, schedulable by the operator.

Who writes what: an admin owns ``spec`` (enable, ratios, reserved); the host's agent owns
``status`` capacity, endpoint, host key and heartbeat; the operator owns
``status.allocations`` and changes it only with resourceVersion-guarded writes, so that
concurrent resizes can never over-commit a host.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from vmresize.api.meta import Condition, Model, PrinterColumn, Resource, Resources, age_column


class AllocationRatios(Model):
    """Overcommit factors, as Nova's ``cpu_allocation_ratio`` and friends."""

    cpu: float = Field(default=4.0, gt=0, le=64)
    """Virtual CPUs per physical CPU (Nova's initial default since Stein: 4.0)."""
    memory: float = Field(default=1.0, gt=0, le=16)
    """Memory overcommit (Nova's initial default: 1.0)."""
    disk: float = Field(default=1.0, gt=0, le=16)
    """Disk overcommit (Nova's initial default: 1.0)."""


class HostSpec(Model):
    """What an admin decides about a host. The agent creates it once and never overwrites it."""

    enabled: bool = True
    """False takes the host out of scheduling; running VMs stay."""
    disabled_reason: str = ""
    """Why the host was disabled, for other admins."""
    allocation_ratios: AllocationRatios = Field(default_factory=AllocationRatios)
    """Overcommit factors."""
    reserved: Resources = Field(default_factory=lambda: Resources(memory_mib=512))
    """Kept back for the hypervisor itself (Nova's reserved_host_memory_mb default: 512)."""
    migration_bandwidth_mibps: int | None = Field(default=None, ge=1, le=1_000_000,
                                                  alias="migrationBandwidthMiBps")
    """The most migration traffic this host sends, MiB/s, shared by all its transfers
    (empty: unlimited). Its agent writes the chart's default when it creates the Host; a
    resize's ``bandwidthMiBps`` above it (or above its destination's) is lowered to it."""


class MigrationEndpoint(Model):
    """Where the host's migration SSH service listens."""

    address: str = Field(min_length=1, max_length=253)
    """IP address or DNS name."""
    port: int = Field(ge=1, le=65535)
    """TCP port."""


class Allocation(Model):
    """Resources held on a host by one instance or one in-flight resize."""

    consumer: str = Field(min_length=1)
    """``<namespace>/<name>`` of the Instance or VMResize that holds it."""
    kind: Literal["Instance", "VMResize"]
    """Which kind of object holds it."""
    resources: Resources
    """How much."""


class OrphanCopy(Model):
    """A destination copy an admin abandoned (``VMResize.spec.abandonDestination``): its host
    never answered, so the copy may still exist there. The record is the fence: the host's
    agent never starts a domain named here, and destroys it (only when its disk lies in
    ``diskDir``) and deletes ``diskDir`` as soon as it runs again, then sets ``cleanedAt``."""

    host: str = Field(min_length=1)
    """The host the copy was left on."""
    owner: str = Field(min_length=1)
    """``<namespace>/<name>`` of the VMResize that abandoned it."""
    owner_uid: str = Field(min_length=1)
    """UID of that VMResize."""
    domain_name: str = Field(min_length=1)
    """The copy's libvirt domain name on that host."""
    disk_path: str = Field(min_length=1)
    """The copy's root disk, relative to the host's storage root."""
    disk_dir: str = Field(min_length=1)
    """The copy's own directory, relative to the storage root: every file of the copy."""
    abandoned_at: datetime
    """When the operator recorded the abandonment (and fenced the copy)."""
    cleaned_at: datetime | None = None
    """When the host's agent had destroyed the copy and deleted its directory."""


class HostStatus(Model):
    """What the agent reports, plus the operator's allocations."""

    capacity: Resources | None = None
    """Physical capacity: CPUs and memory from libvirt, disk from the storage root."""
    storage_root: str | None = None
    """Directory on the host under which every instance disk lives."""
    migration_endpoint: MigrationEndpoint | None = None
    """The migration SSH service."""
    host_key: str | None = None
    """The migration service's SSH host public key (OpenSSH format), pinned by senders."""
    heartbeat: datetime | None = None
    """When the agent last reported in."""
    ready: bool = False
    """The agent is running; false after a clean stop."""
    agent_version: str | None = None
    """vmresize version of the agent."""
    hypervisor: str | None = None
    """The libvirt URI the agent drives."""
    allocations: dict[str, Allocation] = Field(default_factory=dict)
    """Claims on this host, keyed ``<Kind>/<namespace>/<name>``. Written only by the operator."""
    orphans: dict[str, OrphanCopy] = Field(default_factory=dict)
    """Abandoned copies on this host, keyed by the UID of the VMResize that abandoned them.
    Written by the operator (the fence); the agent only sets ``cleanedAt``."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Ready``, and ``TransferFastPath`` (which packet path the agent's transfer runs on,
    and why)."""


class Host(Resource):
    """One hypervisor host."""

    kind_name: ClassVar[str] = "Host"
    plural: ClassVar[str] = "hosts"
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    short_names: ClassVar[list[str]] = ["hv"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Enabled", type="boolean", json_path=".spec.enabled"),
        PrinterColumn(name="Ready", type="boolean", json_path=".status.ready"),
        PrinterColumn(name="VCPUs", type="integer", json_path=".status.capacity.vcpus"),
        PrinterColumn(name="Memory-MiB", type="integer", json_path=".status.capacity.memoryMiB"),
        PrinterColumn(name="Disk-GiB", type="integer", json_path=".status.capacity.diskGiB"),
        PrinterColumn(name="Endpoint", type="string",
                      json_path=".status.migrationEndpoint.address", priority=1),
        PrinterColumn(name="Heartbeat", type="date", json_path=".status.heartbeat"),
        age_column(),
    ]

    spec: HostSpec = Field(default_factory=HostSpec)
    """Admin settings."""
    status: HostStatus | None = None
    """Observed state."""

    def allocated(self) -> Resources:
        """Everything claimed on this host."""
        total = Resources()
        for a in (self.status.allocations if self.status else {}).values():
            total = total + a.resources
        return total
