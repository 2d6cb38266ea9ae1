"""``HostDrain``: empty one Host for maintenance, and the record of how it went.

An admin creates it (``kubectl vmresize drain HOST``). The operator disables the Host with
a reason, then cold-migrates every Instance on it, ``maxParallel`` at a time, each as an
ordinary ``VMResize`` in the Instance's namespace (labelled with the drain's UID, not
owner-referenced: deleting the drain must not garbage-collect, and so roll back, the moves
it started). Each move confirms on its own once the VM runs on its new host. The admin
owns ``spec``; the operator owns ``status``, which it rebuilds on every pass from the
Instances and the labelled VMResizes, so a restarted operator resumes where it was.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from vmresize.api.instance import DNS_SUBDOMAIN
from vmresize.api.meta import (
    DNS_LABEL,
    Condition,
    Model,
    PrinterColumn,
    Resource,
    age_column,
    immutable,
)

#: Label on every VMResize a drain creates: the drain's UID (names may be reused).
DRAIN_UID_LABEL = "vmresize.io/drain-uid"
#: Label on every VMResize a drain creates: the drain's name, for people and selectors.
DRAIN_LABEL = "vmresize.io/drain"


class DrainPhase(StrEnum):
    """Where a drain is."""

    PENDING = "Pending"
    """New: the Host is not disabled yet."""
    DRAINING = "Draining"
    """Moving instances off the Host."""
    CANCELLING = "Cancelling"
    """Cancelled: no new moves; the running ones finish."""
    DRAINED = "Drained"
    """Done: every instance moved; the Host is empty."""
    INCOMPLETE = "Incomplete"
    """Done, but some instances could not move (see ``status.instances``)."""
    CANCELLED = "Cancelled"
    """Cancelled, and the moves that were running have finished."""
    FAILED = "Failed"
    """The Host does not exist."""


#: Phases a drain never leaves.
TERMINAL_DRAIN_PHASES = frozenset({DrainPhase.DRAINED, DrainPhase.INCOMPLETE,
                                   DrainPhase.CANCELLED, DrainPhase.FAILED})


class ItemState(StrEnum):
    """Where one instance of the drain is."""

    WAITING = "Waiting"
    """On the Host, not moving yet (its turn has not come, or another resize holds it)."""
    MOVING = "Moving"
    """Its VMResize runs."""
    MOVED = "Moved"
    """It runs on another host (its VMResize is Confirmed, or it left the Host otherwise)."""
    FAILED = "Failed"
    """It could not move; ``reason`` says why. It still runs on the Host."""


class DrainSpec(Model):
    """What the admin asks for."""

    host: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """The Host to empty. Immutable."""
    max_parallel: int = Field(default=1, ge=1, le=64)
    """How many instances move at once."""
    reason: str = Field(default="", max_length=256)
    """Why, for other admins; the Host's ``disabledReason`` names it."""
    cancel: bool = False
    """Stop starting new moves; the running ones finish. One-way."""
    auto_confirm_after_seconds: int = Field(default=1, ge=1, le=24 * 3600)
    """For an instance that declares no health check: each move confirms this long after
    its VM runs on the new host (Finish only reports success once it has seen it run)."""


class DrainItem(Model):
    """One instance of the drain."""

    namespace: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    """The Instance's namespace."""
    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    """The Instance's name."""
    uid: str = ""
    """The Instance's UID (a namesake created later is another VM)."""
    state: ItemState = ItemState.WAITING
    """Where it is."""
    resize: str | None = None
    """The VMResize that moves it, in its namespace. Recorded before it is created."""
    resize_phase: str | None = None
    """That VMResize's phase, as last seen."""
    dest_host: str | None = None
    """Where it went (or is going)."""
    reason: str = ""
    """Why it failed, one word: ``NoValidHost``, ``Unmovable``, ``RolledBack``,
    ``Reverted``, ``RollbackFailed``, ``Failed``; or why it waits (``Busy``;
    ``HostNotReady``: the drained Host's agent is silent, so no move starts)."""
    message: str = ""
    """In words."""
    started_at: datetime | None = None
    """When its move was recorded."""
    finished_at: datetime | None = None
    """When it reached Moved or Failed."""


class DrainCounts(Model):
    """How many instances are where."""

    total: int = 0
    """Instances on the Host when the drain saw them (and those that left during it)."""
    moved: int = 0
    """Running on another host now."""
    moving: int = 0
    """Being moved now (never more than ``spec.maxParallel``)."""
    waiting: int = 0
    """Not moved yet."""
    failed: int = 0
    """Could not move; still on the Host."""


class DrainStatus(Model):
    """How the drain goes."""

    phase: DrainPhase = DrainPhase.PENDING
    """Where the drain is."""
    reason: str = ""
    """One CamelCase word for machines."""
    message: str = ""
    """What happened last, for people."""
    counts: DrainCounts = Field(default_factory=DrainCounts)
    """Instances by state."""
    progress: str = ""
    """``moved+failed/total``, e.g. ``3/5``, for kubectl."""
    percent: int = Field(default=0, ge=0, le=100)
    """Share of instances that are done (moved or failed)."""
    eta: datetime | None = None
    """When the drain should end, from the mean time of the moves so far and
    ``maxParallel``; empty before the first move ended."""
    started_at: datetime | None = None
    """When the Host was disabled and the first move recorded."""
    finished_at: datetime | None = None
    """When the drain reached a terminal phase."""
    instances: list[DrainItem] = Field(default_factory=list)
    """Every instance of the drain, in the order they are moved."""
    observed_generation: int | None = None
    """The ``metadata.generation`` last acted on."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Ready`` (ended Drained or Cancelled), and the kstatus conventions:
    ``Reconciling`` (at work) and ``Stalled`` (ended with instances that could not move,
    or the Host does not exist)."""


class HostDrain(Resource):
    """Empty one Host: disable it, cold-migrate its instances N at a time."""

    kind_name: ClassVar[str] = "HostDrain"
    plural: ClassVar[str] = "hostdrains"
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    short_names: ClassVar[list[str]] = ["hd", "drain"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Host", type="string", json_path=".spec.host"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Progress", type="string", json_path=".status.progress"),
        PrinterColumn(name="Moving", type="integer", json_path=".status.counts.moving"),
        PrinterColumn(name="Failed", type="integer", json_path=".status.counts.failed"),
        PrinterColumn(name="ETA", type="date", json_path=".status.eta", priority=1),
        PrinterColumn(name="Message", type="string", json_path=".status.message", priority=1),
        age_column(),
    ]
    spec_validations: ClassVar[list[dict[str, Any]]] = [
        {"rule": "self.host == oldSelf.host", "message": "host is immutable"},
        {"rule": "!oldSelf.cancel || self.cancel", "message": "cancel cannot be set back to false"},
        immutable("autoConfirmAfterSeconds"),
    ]

    spec: DrainSpec
    """What to drain."""
    status: DrainStatus | None = None
    """How it goes."""


__all__ = ["DRAIN_LABEL", "DRAIN_UID_LABEL", "TERMINAL_DRAIN_PHASES", "DrainCounts",
           "DrainItem", "DrainPhase", "DrainSpec", "DrainStatus", "HostDrain", "ItemState"]
