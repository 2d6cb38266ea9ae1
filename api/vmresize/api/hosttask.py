"""``HostTask``: one step for one host's agent — a durable RPC with its own status.

The operator creates a HostTask in its own namespace for every step that touches a
hypervisor; the agent of ``spec.host`` carries it out and reports in ``status``. Tasks are
named deterministically from the resize and the step, so that a restarted operator finds
the task it had already created instead of making a second one. Every action is
idempotent on the agent: running it again after a crash resumes or confirms it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from vmresize.api.health import HealthCheck
from vmresize.api.meta import Model, PrinterColumn, Resource, age_column
from vmresize.api.nics import Interface
from vmresize.api.vmdisks import VMDisk


class TaskAction(StrEnum):
    """The step a HostTask asks its agent to carry out; every action is idempotent."""

    SPAWN = "Spawn"
    """Create the instance's disk and domain and start it."""
    ADOPT = "Adopt"
    """Take over an existing domain: report its disk, size and power state."""
    PREPARE = "Prepare"
    """Destination: check space, make the instance directory, expect an incoming disk."""
    MIGRATE_DISK = "MigrateDisk"
    """Source: power off (graceful, then forced), send the disk, report its checksum."""
    FINISH = "Finish"
    """Destination: verify the checksum, grow the disk, define and start with the new flavor."""
    CONFIRM = "Confirm"
    """Source: delete the old domain and disk."""
    CLEANUP_DEST = "CleanupDest"
    """Destination: delete the new copy (revert or rollback)."""
    RESTORE_SOURCE = "RestoreSource"
    """Source: start the old domain with its old flavor (revert or rollback)."""
    DESTROY = "Destroy"
    """Delete the instance's domain and disk."""
    HEALTH_CHECK = "HealthCheck"
    """Destination, in VerifyResize: probe the running VM until the check passes or its
    deadline; changes nothing."""


class TaskPhase(StrEnum):
    """Where a HostTask is; the agent of ``spec.host`` moves it."""

    PENDING = "Pending"
    """Created; the agent has not started it."""
    RUNNING = "Running"
    """The agent is carrying it out (a restarted agent resumes it)."""
    SUCCEEDED = "Succeeded"
    """Done; ``status.result`` holds the outputs."""
    FAILED = "Failed"
    """Gave up; ``status.message`` says why and ``status.retryable`` whether to try again."""


class PowerOff(StrEnum):
    """How MigrateDisk's power-off went."""

    GRACEFUL = "Graceful"
    """The guest answered the ACPI power-off request within the timeout."""
    FORCED = "Forced"
    """The guest was still running at the timeout: it was destroyed (pulled the plug)."""
    ALREADY_OFF = "AlreadyOff"
    """The domain was shut off before the step asked."""


class TaskFlavor(Model):
    """The size a step should give the domain."""

    vcpus: int = Field(ge=1)
    """Virtual CPUs."""
    memory_mib: int = Field(ge=16, alias="memoryMiB")
    """Memory in MiB."""
    disk_gib: int = Field(ge=1, alias="diskGiB")
    """Root disk in GiB."""
    ephemeral_gib: int = Field(default=0, ge=0, alias="ephemeralGiB")
    """Spawn, Finish: the ephemeral disk in GiB (0: none)."""
    swap_mib: int = Field(default=0, ge=0, alias="swapMiB")
    """Spawn, Finish: the swap disk in MiB (0: none)."""


class PeerHost(Model):
    """The other end of a disk transfer, as published in its Host status."""

    name: str
    """Host name."""
    address: str
    """Migration endpoint address."""
    port: int = Field(ge=1, le=65535)
    """Migration endpoint port."""
    host_key: str
    """The peer's SSH host public key, pinned for this transfer."""


class HostTaskSpec(Model):
    """What the agent of ``host`` must do. Written once by the operator."""

    host: str = Field(min_length=1)
    """The host whose agent carries this out. Other agents refuse it."""
    action: TaskAction
    """The step."""
    owner: str = Field(min_length=1)
    """``<namespace>/<name>`` of the VMResize or Instance this step belongs to."""
    owner_uid: str = ""
    """UID of that object, so a recreated namesake never inherits the task."""
    instance: str = Field(min_length=1)
    """``<namespace>/<name>`` of the Instance."""
    instance_uid: str = ""
    """UID of that Instance: the owner recorded in the ``<metadata>`` of every domain vmresize
    defines or adopts. A step destroys, undefines or redefines only a domain that records
    this UID. Empty (a task from an older operator): the domain name alone, as before."""
    domain_name: str | None = None
    """libvirt domain name this step acts on."""
    disk_path: str | None = None
    """Disk this step acts on, relative to the host's storage root."""
    flavor: TaskFlavor | None = None
    """Size for Spawn, Finish and RestoreSource. MigrateDisk: the target size, which the
    source checks against the VM's definition before any power-off (a flavor Finish's
    rewrite would refuse fails the step with the VM untouched)."""
    base_image: str | None = None
    """Spawn: base image file name under the host's images directory."""
    seed_pattern: str | None = None
    """Spawn: text written at the start of a blank disk."""
    peer: PeerHost | None = None
    """MigrateDisk: the destination to send to."""
    peer_disk_path: str | None = None
    """MigrateDisk: where the disk goes on the destination, relative to its storage root."""
    expected_checksum: str | None = None
    """Finish: the disk checksum (``xxh3-128:<hex>``) the received disk must have before it is
    grown."""
    expected_bytes: int | None = None
    """Prepare: apparent size of the disk that will arrive, for the space check."""
    transfer_id: str | None = None
    """Prepare/MigrateDisk: the id under which the destination accepts the incoming disk."""
    bandwidth_mibps: int | None = Field(default=None, ge=1, le=1_000_000,
                                        alias="bandwidthMiBps")
    """MigrateDisk: the limit this copy runs under, MiB/s (the lowest of the resize's and
    both hosts'); empty: unlimited."""
    host_bandwidth_mibps: int | None = Field(default=None, ge=1, le=1_000_000,
                                             alias="hostBandwidthMiBps")
    """MigrateDisk: the source Host's ``migrationBandwidthMiBps`` as the operator read it:
    the agent's two buckets, one shared by all the host's sends and one by all that arrive
    at it, are set to it."""
    bandwidth_note: str = ""
    """MigrateDisk: why ``bandwidthMiBps`` is lower than the resize asked, if it is."""
    power_off_timeout_seconds: int = Field(default=30, ge=0, le=3600)
    """MigrateDisk: how long to wait for a graceful shutdown before forcing it."""
    disks: list[VMDisk] = Field(default_factory=list, max_length=64)
    """Every file of the VM this step acts on (disks, media, backing files, NVRAM, the
    definition), each with its format, size bound and transfer id. Empty: the single
    ``diskPath``/``transferId`` of older operators."""
    interfaces: list[Interface] = Field(default_factory=list, max_length=16)
    """Spawn: the NICs to define, MACs filled in."""
    health_check: HealthCheck | None = None
    """HealthCheck: the probe. None: only whether the domain runs on the host (asked before
    a timer's auto-confirm deletes the source)."""
    deadline: datetime | None = None
    """HealthCheck: give up (fail) if no probe has passed by then."""
    period_seconds: int = Field(default=2, ge=1, le=300)
    """HealthCheck: the pause between two probes."""


class TaskProgress(Model):
    """Disk copy progress, reported at a bounded rate."""

    bytes_done: int = 0
    """Bytes sent."""
    bytes_total: int = 0
    """Bytes to send."""
    rate_bytes_per_second: int = 0
    """Recent rate."""
    limit_bytes_per_second: int = 0
    """The bandwidth limit the copy runs under (0: unlimited)."""


class TaskResult(Model):
    """What a finished step reports back."""

    checksum: str | None = None
    """Disk checksum of the disk (MigrateDisk, Finish): ``xxh3-128:<hex>`` over its content,
    all-zero blocks left out (docs/AGENT.md)."""
    size_bytes: int | None = None
    """Apparent size of the disk."""
    downtime_seconds: float | None = None
    """MigrateDisk: how long the VM has been off when the step ended (from ``stoppedAt``)."""
    power_off: PowerOff | None = None
    """MigrateDisk: how the VM went off; none when a resumed step found it off and held."""
    powered_off_at: datetime | None = None
    """MigrateDisk: when the source's power-off was first requested (the VM may run on
    through the grace period after it)."""
    stopped_at: datetime | None = None
    """MigrateDisk: when the source domain was seen shut off (the downtime's start)."""
    power_off_wait_seconds: float | None = None
    """MigrateDisk: from the power-off request to ``stoppedAt``: the wait for the guest
    (the grace period, if it was forced off), while it still ran; not downtime."""
    started_at: datetime | None = None
    """Finish: when the destination domain was started (the downtime's end)."""
    disk_path: str | None = None
    """Spawn/Adopt: the disk, relative to the storage root."""
    domain_name: str | None = None
    """Spawn/Adopt: the libvirt domain name."""
    vcpus: int | None = None
    """Spawn/Adopt/Finish: vCPUs the domain has."""
    memory_mib: int | None = Field(default=None, alias="memoryMiB")
    """Spawn/Adopt/Finish: memory the domain has, MiB."""
    disk_gib: int | None = Field(default=None, alias="diskGiB")
    """Spawn/Adopt/Finish: virtual size of the disk, GiB."""
    power_state: str | None = None
    """Power state after the step."""
    disks: list[VMDisk] | None = None
    """Spawn/Adopt/Finish: the VM's files on this host; MigrateDisk: each file sent, with
    its checksum."""
    shared_storage: bool | None = None
    """MigrateDisk: the destination's marker was visible here, so nothing crossed the
    network (files were copied within the shared filesystem)."""
    unmovable: list[str] | None = None
    """MigrateDisk/Adopt: why this VM cannot move (refused before any power-off)."""
    probes: int | None = None
    """HealthCheck: probes made until one passed."""


class HostTaskStatus(Model):
    """What the agent reports."""

    phase: TaskPhase = TaskPhase.PENDING
    """Where the step is."""
    attempt: int = 0
    """How many times the agent has started it (a restart resumes)."""
    message: str = ""
    """What happened, for people; on failure, why."""
    retryable: bool = True
    """On failure: whether running the step again could succeed."""
    progress: TaskProgress = Field(default_factory=TaskProgress)
    """Disk copy progress."""
    result: TaskResult = Field(default_factory=TaskResult)
    """Outputs of a finished step."""
    started_at: datetime | None = None
    """When the agent started the latest attempt."""
    finished_at: datetime | None = None
    """When it succeeded or failed."""
    heartbeat: datetime | None = None
    """Refreshed by the agent every few seconds while the step runs. A Running task whose
    heartbeat is older than the operator's window has stopped making progress (a frozen
    agent, a hung disk): the operator retries or rolls back."""


class HostTask(Resource):
    """One step for one host's agent."""

    kind_name: ClassVar[str] = "HostTask"
    plural: ClassVar[str] = "hosttasks"
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    short_names: ClassVar[list[str]] = ["htask"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Host", type="string", json_path=".spec.host"),
        PrinterColumn(name="Action", type="string", json_path=".spec.action"),
        PrinterColumn(name="Owner", type="string", json_path=".spec.owner"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Attempt", type="integer", json_path=".status.attempt"),
        PrinterColumn(name="Message", type="string", json_path=".status.message", priority=1),
        PrinterColumn(name="Heartbeat", type="date", json_path=".status.heartbeat",
                      priority=1),
        age_column(),
    ]
    spec_validations: ClassVar[list[dict[str, str]]] = [
        {"rule": "self == oldSelf", "message": "a HostTask's spec is immutable"},
    ]

    spec: HostTaskSpec
    """The step."""
    status: HostTaskStatus | None = None
    """How it went."""


