"""The vocabulary of the VMResize lifecycle (pure): observations, state, actions, steps.

:mod:`vmresize.operator.decisions.lifecycle` holds the transition table over these types and
:mod:`vmresize.operator.decisions.transitions` the small rule functions it names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, TypedDict

from vmresize.api.flavor import FlavorSpec
from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import PowerOff, TaskAction
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import Candidate, Progress, ResizePhase
from vmresize.api.vmdisks import VMDisk


class StatusPatch(TypedDict, total=False):
    """The status fields a decision (or the look before it) sets, each with its model's
    type: the rest of ``VMResizeStatus`` (phase, reason, message, the task, the effects,
    the conditions) is the engine's to write. A test holds each key and type to the model."""

    source_host: str | None
    instance_uid: str | None
    dest_host: str | None
    old_flavor: str | None
    new_flavor: str | None
    old_flavor_spec: FlavorSpec | None
    new_flavor_spec: FlavorSpec | None
    progress: Progress
    downtime_seconds: float | None
    powered_off_at: datetime | None
    stopped_at: datetime | None
    power_off_wait_seconds: float | None
    power_off: PowerOff | None
    source_disks: list[VMDisk] | None
    candidates: list[Candidate]
    alternates: list[str]
    attempts: int
    filter_counts: dict[str, int]
    dest_domain_name: str | None
    dest_disk_path: str | None
    source_checksum: str | None
    verify_deadline: datetime | None
    health_deadline: datetime | None
    rollback_from: str | None
    rollback_reason: str | None
    rollback_message: str | None
    prepare_failure: str | None
    restore_source_first: bool
    abandoned_destination: OrphanCopy | None


class Kind(StrEnum):
    """What the engine saw."""

    VALID = "Valid"                  # Pending: request is sound and the instance lock is ours
    INVALID = "Invalid"              # Pending: bad request (reason/message say why)
    BUSY = "Busy"                    # Pending: another resize holds the instance
    CHOSEN = "Chosen"                # Scheduling: ``host`` chosen (or next); claim it next
    SCHEDULED = "Scheduled"          # Scheduling: a claim is held on ``host``
    NO_VALID_HOST = "NoValidHost"    # Scheduling: nothing fits (``counts`` per filter)
    TASK_WAITING = "TaskWaiting"     # current HostTask pending or running (``progress``)
    TASK_SUCCEEDED = "TaskSucceeded"
    TASK_FAILED = "TaskFailed"
    TASK_STALLED = "TaskStalled"     # current HostTask shows no sign of life (``watchdog``)
    TASK_MISSING = "TaskMissing"     # current HostTask does not exist (deleted by an admin)
    CONFIRM = "Confirm"              # spec.confirm is set
    REVERT = "Revert"                # spec.revert is set
    TICK = "Tick"                    # nothing new; time passed
    ABANDON = "AbandonDestination"   # spec.abandonDestination is set (``orphan``: the copy)
    CANCEL = "Cancel"                # spec.cancel is set (before VerifyResize, or reached it)
    QUOTA_EXCEEDED = "QuotaExceeded"  # the namespace's VMQuota has no room (``message``)


@dataclass(frozen=True)
class Observation:
    """What the engine saw for the current phase: its kind and what goes with it (chosen host,
    filter counts, task progress, checksum, downtime, whether a failure may be retried)."""

    kind: Kind
    reason: str = ""
    message: str = ""
    host: str | None = None
    alternates: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    progress: tuple[int, int, int] | None = None   # bytes done, total, rate
    limit: tuple[int, str] = (0, "")   # the copy's bandwidth limit (0: none), B/s, and why
    checksum: str | None = None
    downtime_seconds: float | None = None
    power_off: str | None = None   # MigrateDisk: Graceful, Forced or AlreadyOff
    powered_off_at: datetime | None = None   # MigrateDisk: the power-off request
    stopped_at: datetime | None = None       # MigrateDisk: seen off, the downtime's start
    power_off_wait_seconds: float | None = None   # MigrateDisk: request -> seen off
    started_at: datetime | None = None       # Finish: the downtime's end
    retryable: bool = True
    disks: tuple[VMDisk, ...] = ()   # MigrateDisk: every file sent, with its checksum
    orphan: OrphanCopy | None = None
    """ABANDON: the destination's copy as it would be recorded (None: none to abandon)."""
    deadline: datetime | None = None
    """When what was seen goes stale by itself though no object changes: the engine wakes
    the resize then (:func:`lifecycle.next_deadline`; the step watchdog has its own)."""
    dest_unvouched: str = ""
    """VerifyResize past its confirm window: why the destination cannot be vouched for now
    (its agent silent or not ready, its Host gone); empty when it can. Auto-confirm deletes
    the source, so it waits for this to clear (issue 18, finding 7)."""


@dataclass(frozen=True)
class State:
    """The parts of a VMResize (and the cluster settings) that the lifecycle decides on."""

    phase: ResizePhase
    source_host: str | None = None
    dest_host: str | None = None
    attempts: int = 0
    alternates: tuple[str, ...] = ()
    current_action: TaskAction | None = None
    current_attempt: int = 0
    verify_deadline: datetime | None = None
    confirm_window_seconds: int = 0       # resolved: spec override, else cluster default
    max_attempts: int = 3
    task_retries: int = 5
    deleting: bool = False
    rollback_from: str | None = None
    reason: str = ""                      # status.reason as it stands
    health_check: str = ""                # the check named by spec.autoConfirm, described
    health_window_seconds: int = 0        # how long it may take to pass, from its start
    health_deadline: datetime | None = None
    rollback_reason: str | None = None    # why the rollback began (e.g. StepStalled)
    rollback_message: str | None = None   # and in words, for the final status
    prepare_failure: str | None = None    # a failed Prepare's words, while its host is cleaned
    restore_source_first: bool = False    # this rollback restarts the source before cleanup
    powered_off_at: datetime | None = None
    stopped_at: datetime | None = None    # the source seen off: the downtime's start
    abandoned: bool = False               # an admin abandoned the destination (fenced)


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class CreateTask:
    """Create (idempotently) the HostTask ``action`` for ``host``, try number ``attempt``."""

    action: TaskAction
    host: str
    attempt: int = 0


@dataclass(frozen=True)
class LockInstance:
    """Take the Instance's one-resize-at-a-time lock (the next step checks it is ours)."""


@dataclass(frozen=True)
class ClaimDest:
    """Claim the new flavor's resources on ``host`` (refused if they no longer fit)."""

    host: str


@dataclass(frozen=True)
class ReleaseDestClaim:
    """Drop this resize's claim on the destination host."""


@dataclass(frozen=True)
class CommitClaims:
    """Confirmed: drop the instance's source claim; the dest claim becomes the instance's."""


@dataclass(frozen=True)
class UpdateInstance:
    """Set the Instance's status, if this resize holds its lock."""

    placement: Literal["source", "dest", "keep"]
    """source/dest: the Instance now lives there; keep: leave host, domain and disk as they
    are (in VerifyResize the source copy is still the one to come back to)."""
    phase: InstancePhase
    power: PowerState | None   # None keeps the current power state
    unlock: bool
    message: str = ""


@dataclass(frozen=True)
class FenceOrphan:
    """Record the abandoned copy on its ``host`` (``status.orphans``): its agent destroys it
    and never starts it."""

    host: str


Action = (CreateTask | LockInstance | ClaimDest | ReleaseDestClaim | CommitClaims
          | UpdateInstance | FenceOrphan)


@dataclass(frozen=True)
class Step:
    """What a rule decided: the next phase, the actions to carry out, and the reason, message and
    other status fields to write."""

    phase: ResizePhase
    actions: tuple[Action, ...] = ()
    reason: str | None = None            # None keeps the current one
    message: str | None = None
    updates: StatusPatch = field(default_factory=lambda: StatusPatch())   # other fields


Rule = Callable[[State, Observation, datetime], Step]
