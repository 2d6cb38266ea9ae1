"""``VMResize``: one resize or cold migration of one instance, and the whole story of it.

The user owns ``spec`` (target flavor; confirm or revert); the operator owns ``status``.
CEL rules let the API server itself refuse what it can judge alone.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from vmresize.api.flavor import FlavorSpec
from vmresize.api.health import AutoConfirm
from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import PowerOff
from vmresize.api.instance import DNS_SUBDOMAIN, InstancePhase, PowerState
from vmresize.api.meta import (
    DNS_LABEL,
    Condition,
    Model,
    PrinterColumn,
    Resource,
    age_column,
    immutable,
)
from vmresize.api.vmdisks import VMDisk


class ResizePhase(StrEnum):
    """Where a resize is; the operator's lifecycle table moves it. ``TERMINAL_PHASES`` end it."""

    PENDING = "Pending"
    """New: the request is checked and the instance locked."""
    SCHEDULING = "Scheduling"
    """Choosing a destination and claiming its resources."""
    PREPARING = "Preparing"
    """Prepare runs on the destination."""
    MIGRATING = "Migrating"
    """MigrateDisk runs on the source: power off, copy the disk."""
    FINISHING = "Finishing"
    """Finish runs on the destination: check, grow, define and start with the new flavor."""
    VERIFY_RESIZE = "VerifyResize"
    """Running on the destination; waiting for confirm, revert or auto-confirm."""
    CONFIRMING = "Confirming"
    """Confirm runs on the source: the old copy is deleted."""
    CONFIRMED = "Confirmed"
    """Done: the instance lives on the destination with the new flavor."""
    REVERTING = "Reverting"
    """The user reverted: the new copy is deleted and the source started again."""
    REVERTED = "Reverted"
    """Done: the instance runs on the source again, unchanged."""
    ROLLING_BACK = "RollingBack"
    """A step failed (or the resize was deleted): back to the source."""
    ROLLED_BACK = "RolledBack"
    """Done: the rollback finished; the instance runs on the source, unchanged."""
    ROLLBACK_FAILED = "RollbackFailed"
    """The rollback failed: both copies are kept for an admin."""
    FAILED = "Failed"
    """Refused, not schedulable, or deleted before scheduling; nothing was moved."""
    CANCELLED = "Cancelled"
    """Done: cancelled (``spec.cancel``) before VerifyResize and rolled back as a failure
    would be; the instance runs on the source, unchanged. The whole story is kept."""


#: Phases a resize never leaves.
TERMINAL_PHASES = frozenset({
    ResizePhase.CONFIRMED, ResizePhase.REVERTED, ResizePhase.ROLLED_BACK,
    ResizePhase.ROLLBACK_FAILED, ResizePhase.FAILED, ResizePhase.CANCELLED,
})

#: Phases ``spec.cancel`` is accepted in: everything before VerifyResize (from there on
#: the way back is revert).
CANCELLABLE_PHASES = frozenset({ResizePhase.PENDING, ResizePhase.SCHEDULING,
                                ResizePhase.PREPARING, ResizePhase.MIGRATING,
                                ResizePhase.FINISHING})


def _decided_only_in_verify_resize(flag: str) -> dict[str, Any]:
    """CEL at the root (it must see ``status``): ``spec.<flag>`` may turn true only while
    the resize waits in VerifyResize. A transition rule with an optional ``oldSelf``, so it
    also refuses a resize created with the flag set (there is no status on create), and
    never bites a status write: those cannot change the spec, so the flag keeps its old
    value and the rule holds."""
    phase = "(has(self.status) && has(self.status.phase) ? self.status.phase : 'Pending')"
    return {
        "rule": f"!self.spec.{flag} || (oldSelf.hasValue() && oldSelf.value().spec.{flag}) "
        f"|| {phase} == 'VerifyResize'",
        # oldSelf is not bound in a message expression, so a new resize reads as Pending.
        "messageExpression": f"'spec.{flag} is accepted only while the resize is in "
        f"VerifyResize; it is ' + {phase}",
        "message": f"spec.{flag} is accepted only while the resize is in VerifyResize",
        "optionalOldSelf": True,
        "reason": "FieldValueForbidden",
        "fieldPath": f".spec.{flag}",
    }


#: Phases that wait on the destination's agent, and so may abandon it.
ABANDONABLE_PHASES = frozenset({ResizePhase.FINISHING, ResizePhase.REVERTING,
                                ResizePhase.ROLLING_BACK})


def _abandoned_only_when_waiting_on_dest() -> dict[str, Any]:
    """CEL at the root: ``spec.abandonDestination`` may turn true only while the resize waits
    on its destination (Finishing, Reverting, RollingBack); as the rule above, a transition
    rule with an optional ``oldSelf`` that also refuses it on create."""
    phase = "(has(self.status) && has(self.status.phase) ? self.status.phase : 'Pending')"
    allowed = ", ".join(f"'{p.value}'" for p in sorted(ABANDONABLE_PHASES))
    return {
        "rule": "!self.spec.abandonDestination || (oldSelf.hasValue() && "
        f"oldSelf.value().spec.abandonDestination) || {phase} in [{allowed}]",
        "messageExpression": "'spec.abandonDestination is accepted only while the resize "
        f"waits on its destination ({allowed.replace(chr(39), '')}); it is ' + {phase}",
        "message": "spec.abandonDestination is accepted only while the resize waits on its "
        "destination",
        "optionalOldSelf": True,
        "reason": "FieldValueForbidden",
        "fieldPath": ".spec.abandonDestination",
    }


def _cancelled_only_before_verify_resize() -> dict[str, Any]:
    """CEL at the root: ``spec.cancel`` may turn true only before VerifyResize (a transition
    rule with an optional ``oldSelf``, as the rules above; a resize created cancelled reads
    as Pending and ends Cancelled at once, having touched nothing). From VerifyResize on the
    way back is revert, and the message says so."""
    phase = "(has(self.status) && has(self.status.phase) ? self.status.phase : 'Pending')"
    allowed = ", ".join(f"'{p.value}'" for p in sorted(CANCELLABLE_PHASES))
    return {
        "rule": "!self.spec.cancel || (oldSelf.hasValue() && oldSelf.value().spec.cancel) "
        f"|| {phase} in [{allowed}]",
        "messageExpression": "'spec.cancel is accepted only before VerifyResize; it is ' + "
        f"{phase} + ({phase} == 'VerifyResize' ? ': use spec.revert (kubectl vmresize "
        "revert) to go back' : '')",
        "message": "spec.cancel is accepted only before VerifyResize; in VerifyResize use "
        "spec.revert",
        "optionalOldSelf": True,
        "reason": "FieldValueForbidden",
        "fieldPath": ".spec.cancel",
    }


class MigrationMode(StrEnum):
    """How MigrateDisk moves the disks (see ``VMResizeSpec.migration_mode``)."""

    PRE_COPY = "PreCopy"
    OFFLINE = "Offline"


class VMResizeSpec(Model):
    """What the user asks for."""

    instance_name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    """Name of the Instance, in the same namespace, to resize or migrate. Immutable."""
    flavor: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Target Flavor. Empty means a cold migration with the current flavor. Immutable."""
    target_host: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN
    )
    """Force this destination host (an admin's act, as in Nova). Immutable."""
    confirm: bool = False
    """Set true in VerifyResize to keep the new copy and delete the old. One-way; refused
    in any other phase (and on create)."""
    revert: bool = False
    """Set true in VerifyResize to go back to the old host and flavor. One-way; refused in
    any other phase (and on create)."""
    auto_confirm_seconds: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)
    """Confirm automatically this long after VerifyResize; 0 never. Empty: cluster default.
    The simple case of ``autoConfirm`` (``autoConfirm.afterSeconds``); not with it."""
    auto_confirm: AutoConfirm | None = None
    """Confirm on a timer or on evidence: a health check run by the destination agent in
    VerifyResize; passed, the resize is confirmed; failed or out of time, it is reverted.
    Immutable."""
    abandon_destination: bool = False
    """An admin's act, audited (only admins may set it, by the chart's admission policy):
    give up a destination host that never comes back. Accepted only in Finishing,
    Reverting or RollingBack; one-way. The operator fences the copy there (recorded in the
    Host's ``status.orphans``: its agent destroys it and never starts it), starts the VM on
    its source again and ends the resize with reason ``DestinationAbandoned``."""
    cancel: bool = False
    """Set true to stop the resize before VerifyResize: it rolls back as a failure would
    (the destination cleaned, the source restored and started if it was powered off) and
    ends ``Cancelled``, its status, conditions and events kept. One-way; refused from
    VerifyResize on (use revert there)."""
    migration_mode: MigrationMode = MigrationMode.PRE_COPY
    """PreCopy: copy the disks while the VM runs, power off, send what changed (short
    downtime). Offline: power off, then copy everything (Nova's way). A VM that is
    already off moves the Offline way. Immutable."""
    bandwidth_mibps: int | None = Field(default=None, ge=1, le=1_000_000,
                                        alias="bandwidthMiBps")
    """The most this resize's disk copy may use, MiB/s (empty: the hosts' limits alone).
    The limit it runs under is the lowest of this and both hosts'
    ``migrationBandwidthMiBps``; higher than theirs, it is lowered, and
    ``status.progress.limitNote`` says so. Read when the copy starts."""


class Progress(Model):
    """How far the disk copy has come."""

    bytes_done: int = Field(default=0, ge=0)
    """Bytes of disk data sent so far."""
    bytes_total: int = Field(default=0, ge=0)
    """Bytes of disk data to send (allocated data only, holes excluded)."""
    rate_bytes_per_second: int = Field(default=0, ge=0)
    """Recent transfer rate."""
    percent: int = Field(default=0, ge=0, le=100)
    """bytesDone / bytesTotal, rounded down."""
    limit_bytes_per_second: int = Field(default=0, ge=0)
    """The bandwidth limit the copy runs under (0: unlimited), as its agent applies it."""
    limit_note: str = ""
    """Why the limit differs from ``spec.bandwidthMiBps``, if it does (a host's is lower)."""
    display: str = ""
    """Human summary shown by kubectl, for example ``42% 310MiB/s`` or
    ``42% 8MiB/s limit 8MiB/s``."""


class Candidate(Model):
    """One host the scheduler found suitable, with its weight."""

    host: str
    """Host name."""
    weight: float
    """Normalised weight; higher is better."""


class Effect(Model):
    """A change to another object (a Host claim, the Instance) that the recorded decision
    asks for. The operator writes it into the status first, then carries it out (each kind
    is idempotent), then clears it; a crash in between makes the next step redo it."""

    kind: Literal["LockInstance", "ClaimDest", "ReleaseDestClaim", "CommitClaims",
                  "UpdateInstance", "FenceOrphan"]
    """What to change."""
    host: str | None = None
    """ClaimDest: the host to claim on; FenceOrphan: the host the copy is left on."""
    placement: Literal["source", "dest", "keep"] | None = None
    """UpdateInstance: where the Instance lives now (keep: unchanged)."""
    instance_phase: InstancePhase | None = None
    """UpdateInstance: the Instance's phase."""
    power_state: PowerState | None = None
    """UpdateInstance: its power state (empty keeps it)."""
    unlock: bool = False
    """UpdateInstance: release the Instance's lock."""
    message: str = ""
    """UpdateInstance: the Instance's message."""


class VMResizeStatus(Model):
    """The whole story of the resize."""

    phase: ResizePhase = ResizePhase.PENDING
    """Lifecycle phase."""
    reason: str = ""
    """One CamelCase word for machines, for example ``NoValidHost``."""
    message: str = ""
    """What happened last, for people."""
    source_host: str | None = None
    """Host the instance was on when the resize began."""
    instance_uid: str | None = None
    """UID of the Instance this resize locked (a namesake created later is another VM)."""
    dest_host: str | None = None
    """Host chosen by the scheduler (or forced)."""
    old_flavor: str | None = None
    """Flavor before the resize."""
    new_flavor: str | None = None
    """Flavor after the resize (the old one for a cold migration)."""
    old_flavor_spec: FlavorSpec | None = None
    """The sizes the instance had when the resize left Pending (as Nova's old_flavor)."""
    new_flavor_spec: FlavorSpec | None = None
    """The target flavor's sizes when the resize left Pending (as Nova's new_flavor); every
    later step uses this snapshot, never the Flavor, which may change or go away."""
    progress: Progress = Field(default_factory=Progress)
    """Disk copy progress."""
    phase_timestamps: dict[str, datetime] = Field(default_factory=dict)
    """When each phase was entered."""
    downtime_seconds: float | None = None
    """How long the VM was powered off for the move: from the moment the source was seen
    shut off (``stoppedAt``) to the start on the destination (until then, to the end of
    the copy). The wait for the guest to shut down is not in it (``powerOffWaitSeconds``)."""
    powered_off_at: datetime | None = None
    """When MigrateDisk first asked the source to power off."""
    stopped_at: datetime | None = None
    """When the source was seen shut off: the downtime's start."""
    power_off_wait_seconds: float | None = None
    """From the power-off request to ``stoppedAt``: the VM still ran meanwhile (a guest
    that ignores ACPI runs through the whole grace period, then is forced off)."""
    power_off: PowerOff | None = None
    """How the source went off: Graceful (ACPI), Forced (after the grace period) or
    AlreadyOff."""
    source_disks: list[VMDisk] | None = None
    """Every file MigrateDisk sent (where it goes, its checksum); Finish verifies each."""
    candidates: list[Candidate] = Field(default_factory=list)
    """Hosts that passed every filter, best first."""
    alternates: list[str] = Field(default_factory=list)
    """Hosts still to try if preparing the destination fails."""
    attempts: int = 0
    """Destinations tried so far (at most the operator's maxAttempts)."""
    filter_counts: dict[str, int] = Field(default_factory=dict)
    """Hosts removed by each scheduler filter, for NoValidHost."""
    current_task: str | None = None
    """Name of the one HostTask that may run for this resize now. Written before the task
    is created; an agent refuses a destructive step unless it is named here."""
    pending: list[Effect] = Field(default_factory=list)
    """Changes to Host claims and the Instance that the last decision asked for and that
    may not be done yet (redone, idempotently, by the next step)."""
    dest_domain_name: str | None = None
    """libvirt domain name of the new copy."""
    dest_disk_path: str | None = None
    """Disk of the new copy, relative to the destination's storage root."""
    source_checksum: str | None = None
    """Disk checksum (``xxh3-128:<hex>``) of the powered-off source disk."""
    verify_deadline: datetime | None = None
    """When auto-confirm fires, if enabled (with a health check: when its first probe may
    run)."""
    health_deadline: datetime | None = None
    """With a health check: when the check must have passed; after it, the resize reverts."""
    rollback_from: str | None = None
    """The phase that failed and caused the rollback."""
    rollback_reason: str | None = None
    """Why the rollback began, e.g. ``MigratingFailed``, ``StepStalled``, ``Deleted``."""
    rollback_message: str | None = None
    """Why the rollback began, in words (a failed step's message: a flavor the source
    refused before the power-off says which and why); the RolledBack status repeats it."""
    prepare_failure: str | None = None
    """Preparing: why the Prepare on ``destHost`` failed, kept while a CleanupDest there
    removes what it accepted, before the next alternate is tried."""
    restore_source_first: bool = False
    """The rollback restarts the source before it deletes the destination's copy (a rollback
    from Migrating: no domain exists on the destination, which may be the silent agent)."""
    abandoned_destination: OrphanCopy | None = None
    """Set when an admin abandoned the destination (``spec.abandonDestination``): the copy
    left there, fenced in that Host's ``status.orphans``."""
    observed_generation: int | None = None
    """The ``metadata.generation`` last acted on."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Ready`` (done), ``VerifyResize`` (waiting for the user), ``Failed``,
    ``RolledBack``, ``Healthy`` (the health check's verdict, once there is one), and the
    kstatus conventions GitOps tools read: ``Reconciling`` (the operator is at work) and
    ``Stalled`` (ended without the resize asked for: Failed, RollbackFailed, RolledBack;
    not Cancelled, which is what the user asked for)."""


class VMResize(Resource):
    """A resize (new flavor) or cold migration (no flavor) of one Instance."""

    kind_name: ClassVar[str] = "VMResize"
    plural: ClassVar[str] = "vmresizes"
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    short_names: ClassVar[list[str]] = ["vmr", "resize"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Instance", type="string", json_path=".spec.instanceName"),
        PrinterColumn(name="From", type="string", json_path=".status.sourceHost"),
        PrinterColumn(name="To", type="string", json_path=".status.destHost"),
        PrinterColumn(name="Flavor", type="string", json_path=".status.newFlavor"),
        PrinterColumn(name="Progress", type="string", json_path=".status.progress.display"),
        PrinterColumn(name="Downtime", type="number", json_path=".status.downtimeSeconds",
                      priority=1),
        PrinterColumn(name="Reason", type="string", json_path=".status.reason", priority=1),
        PrinterColumn(name="Message", type="string", json_path=".status.message", priority=1),
        age_column(),
    ]
    spec_validations: ClassVar[list[dict[str, str]]] = [
        {"rule": "!(self.confirm && self.revert)",
         "message": "confirm and revert are mutually exclusive"},
        {"rule": "!oldSelf.confirm || self.confirm",
         "message": "confirm cannot be set back to false"},
        {"rule": "!oldSelf.revert || self.revert",
         "message": "revert cannot be set back to false"},
        {"rule": "self.instanceName == oldSelf.instanceName",
         "message": "instanceName is immutable"},
        immutable("flavor"),
        immutable("targetHost"),
        immutable("autoConfirm"),
        {"rule": "!has(self.autoConfirm) || !has(self.autoConfirmSeconds)",
         "message": "set autoConfirm.afterSeconds or autoConfirmSeconds, not both"},
        immutable("migrationMode"),
        {"rule": "!oldSelf.abandonDestination || self.abandonDestination",
         "message": "abandonDestination cannot be set back to false"},
        {"rule": "!oldSelf.cancel || self.cancel",
         "message": "cancel cannot be set back to false"},
    ]
    root_validations: ClassVar[list[dict[str, Any]]] = [
        _decided_only_in_verify_resize("confirm"),
        _decided_only_in_verify_resize("revert"),
        _abandoned_only_when_waiting_on_dest(),
        _cancelled_only_before_verify_resize(),
    ]

    spec: VMResizeSpec
    """What to do."""
    status: VMResizeStatus | None = None
    """What has happened."""


__all__ = ["ABANDONABLE_PHASES", "CANCELLABLE_PHASES", "TERMINAL_PHASES", "Candidate",
           "Effect", "Progress",
           "ResizePhase", "VMResize", "VMResizeSpec", "VMResizeStatus"]
