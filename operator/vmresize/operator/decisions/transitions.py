"""The rules of the VMResize lifecycle (pure): one small function per table entry.

Each takes ``(state, observation, now)`` and returns the :class:`Step` to take; the table
in :mod:`vmresize.operator.decisions.lifecycle` says which rule answers which (phase, observation).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Unpack

from vmresize.api.hosttask import PowerOff, TaskAction
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import Progress, ResizePhase
from vmresize.operator.decisions.abandon import abandoned_end
from vmresize.operator.decisions.conditions import HEALTH_FAILED
from vmresize.operator.decisions.vocabulary import (
    Action,
    ClaimDest,
    CommitClaims,
    CreateTask,
    Kind,
    LockInstance,
    Observation,
    ReleaseDestClaim,
    State,
    StatusPatch,
    Step,
    UpdateInstance,
)

P = ResizePhase
A = TaskAction


def stay(s: State, o: Observation, now: datetime) -> Step:
    """No change: the default for any (phase, observation) the table does not name."""
    return Step(s.phase)


def recreate(s: State, o: Observation, now: datetime) -> Step:
    """The current HostTask is gone (deleted by an admin): create it again, same action and
    attempt."""
    assert s.current_action is not None
    host = s.source_host if s.current_action in _SOURCE_ACTIONS else s.dest_host
    return Step(s.phase, (CreateTask(s.current_action, host or "", s.current_attempt),),
                message=f"HostTask {s.current_action} was missing; created it again")


_SOURCE_ACTIONS = frozenset({A.MIGRATE_DISK, A.CONFIRM, A.RESTORE_SOURCE})


def progress_display(done: int, total: int, rate: int, limit: int = 0) -> tuple[int, str]:
    """Percent and the kubectl column text, e.g. ``(42, "42% 310MiB/s")`` or, under a
    bandwidth limit, ``(42, "42% 8MiB/s limit 8MiB/s")``."""
    pct = min(100, done * 100 // total) if total else 0
    text = f"{pct}% {rate // (1024 * 1024)}MiB/s"
    return pct, text + (f" limit {limit // (1024 * 1024)}MiB/s" if limit else "")


def _progress(o: Observation) -> StatusPatch:
    if o.progress is None:
        return {}
    done, total, rate = o.progress
    limit, note = o.limit
    pct, text = progress_display(done, total, rate, limit)
    return {"progress": Progress(bytes_done=done, bytes_total=total,
                                 rate_bytes_per_second=rate, percent=pct, display=text,
                                 limit_bytes_per_second=limit, limit_note=note)}


CANCELLED = "Cancelled"
"""The reason (and ``rollbackReason``) of a rollback the user asked for with ``spec.cancel``:
it ends in the phase Cancelled, not RolledBack."""

MESSAGE_KEPT = 1024
"""How much of the message that began a rollback the status keeps to the end."""


def _rollback(s: State, why: str, message: str, *, off: bool = False,
              **updates: Unpack[StatusPatch]) -> Step:
    """Start a rollback: delete the dest copy (if there is a dest), then start the source.

    From Migrating the source starts first: no Finish was ever created, so no domain
    exists on the destination (at most a partial disk), and the destination may be the
    very agent that is frozen; waiting for its cleanup would keep the VM off."""
    frm = updates.pop("rollback_from", None) or s.phase.value
    source_first = bool(s.dest_host) and frm == P.MIGRATING.value
    first = (CreateTask(A.CLEANUP_DEST, s.dest_host, 0) if s.dest_host and not source_first
             else CreateTask(A.RESTORE_SOURCE, s.source_host or "", 0))
    acts: tuple[Action, ...] = (first,)
    if frm == P.MIGRATING.value:
        # MigrateDisk may have powered the source off before it failed or stalled (``off``:
        # it did, its copy is done); the Instance must not go on saying Running until
        # RestoreSource has run, however long its agent takes (invariant 11).
        acts += (UpdateInstance("keep", InstancePhase.RESIZING,
                                PowerState.SHUTOFF if off else PowerState.UNKNOWN,
                                unlock=False, message=f"{message}; "
                                f"{'powered off' if off else 'may be off'} on "
                                f"{s.source_host} until it is started again there"),)
    return Step(P.ROLLING_BACK, acts,
                reason=why, message=f"{message}; rolling back to {s.source_host}",
                updates={"rollback_from": frm, "rollback_reason": why,
                         "rollback_message": message[:MESSAGE_KEPT],
                         "restore_source_first": source_first, **updates})


def begin_rollback(s: State, why: str, message: str) -> Step:
    """Start a rollback from the current phase as its failure would (for the rules of
    other modules, e.g. :mod:`.cancel`)."""
    return _rollback(s, why, message)


def _unlock_failed(reason: str, message: str, *extra: Action) -> Step:
    """Failed before anything moved: the instance is as it was (power state included)."""
    return Step(P.FAILED, (*extra, UpdateInstance("source", InstancePhase.ACTIVE,
                                                  None, unlock=True)),
                reason=reason, message=message)


def pending_valid(s: State, o: Observation, now: datetime) -> Step:
    """The request is sound: lock the instance (an effect of this step), then schedule."""
    return Step(P.SCHEDULING, (LockInstance(),), reason="Scheduling",
                message="Locking the instance; scheduling")


def scheduling_refused(s: State, o: Observation, now: datetime) -> Step:
    """The lock was not ours after all (taken by another resize, or the instance is being
    deleted or gone): fail without touching the instance."""
    reason = o.reason or ("InstanceBusy" if o.kind is Kind.BUSY else "Invalid")
    return Step(P.FAILED, (ReleaseDestClaim(),), reason=reason, message=o.message or reason)


def chosen(s: State, o: Observation, now: datetime) -> Step:
    """Record the host to claim on (and what is left to try), then claim it."""
    assert o.host is not None
    if s.deleting:
        return scheduling_tick(s, o, now)
    return Step(P.SCHEDULING, (ClaimDest(o.host),),
                message=f"Claiming resources on {o.host}",
                updates={"dest_host": o.host, "alternates": list(o.alternates)})


def pending_refused(s: State, o: Observation, now: datetime) -> Step:
    """Invalid request, or another resize holds the instance: Failed, with nothing changed."""
    reason = o.reason or ("InstanceBusy" if o.kind is Kind.BUSY else "Invalid")
    return Step(P.FAILED, reason=reason, message=o.message or reason)


def pending_tick(s: State, o: Observation, now: datetime) -> Step:
    """Deleted while Pending: Failed and the instance unlocked; otherwise wait."""
    if s.deleting:
        return _unlock_failed("Deleted", "Deleted before it was scheduled")
    return Step(s.phase)


def scheduled(s: State, o: Observation, now: datetime) -> Step:
    """A claim is held on ``o.host``: remember it and its alternates and create the Prepare task
    there."""
    assert o.host is not None
    if s.deleting:
        return scheduling_tick(s, o, now)
    return Step(P.PREPARING, (CreateTask(A.PREPARE, o.host, s.attempts),),
                reason="Preparing", message=f"Claimed resources on {o.host}; preparing it",
                updates={"dest_host": o.host, "alternates": list(o.alternates),
                         "attempts": s.attempts + 1})


def no_valid_host(s: State, o: Observation, now: datetime) -> Step:
    """Nothing fits: Failed on the first attempt; after a failed destination, roll back."""
    counts = ", ".join(f"{k}: {v}" for k, v in o.counts.items() if v) or "no hosts"
    msg = f"No valid host was found ({counts} removed)"
    if s.attempts == 0:
        return Step(P.FAILED, (UpdateInstance("source", InstancePhase.ACTIVE,
                                              None, unlock=True),),
                    reason="NoValidHost", message=msg, updates={"filter_counts": dict(o.counts)})
    return _rollback(s, "MaxAttemptsExceeded", f"No alternate host left: {msg}",
                     filter_counts=dict(o.counts), rollback_from=P.PREPARING.value)


def scheduling_tick(s: State, o: Observation, now: datetime) -> Step:
    """Deleted while Scheduling: release any destination claim, unlock, Failed; otherwise wait."""
    if s.deleting:
        return _unlock_failed("Deleted", "Deleted while scheduling", ReleaseDestClaim())
    return Step(s.phase)


def waiting(s: State, o: Observation, now: datetime) -> Step:
    """The HostTask is still running: copy its progress into the status."""
    return Step(s.phase, updates=_progress(o))


def prepared(s: State, o: Observation, now: datetime) -> Step:
    """The destination is ready: create MigrateDisk on the source (or roll back if deleted
    meanwhile)."""
    if s.deleting:
        return _rollback(s, "Deleted", "Deleted while preparing")
    # MigrateDisk powers the VM off when it sees fit: from now on the Instance no longer
    # says Running (invariant 11), even if this resize is forced away before its outcome
    # is seen (the lock sweep keeps the power state it finds: issue 18, the model test).
    may_be_off = UpdateInstance("keep", InstancePhase.RESIZING, PowerState.UNKNOWN,
                                unlock=False, message=f"Moving to {s.dest_host}: may be "
                                f"powered off on {s.source_host} for the copy")
    return Step(P.MIGRATING, (CreateTask(A.MIGRATE_DISK, s.source_host or "", 0), may_be_off),
                reason="Migrating", message=f"Copying the disk {s.source_host} -> {s.dest_host}")


def prepare_failed(s: State, o: Observation, now: datetime) -> Step:
    """Prepare failed: release the claim and try the next alternate, or roll back when none is left
    (or the resize is being deleted)."""
    msg = f"Preparing {s.dest_host} failed: {o.message}"
    if not s.deleting and s.alternates and s.attempts < s.max_attempts:
        return Step(P.SCHEDULING, (ReleaseDestClaim(),), reason="Rescheduling",
                    message=f"{msg}; trying the next alternate",
                    updates={"dest_host": None})
    why = "Deleted" if s.deleting else "MaxAttemptsExceeded"
    return Step(P.ROLLING_BACK, (ReleaseDestClaim(), CreateTask(A.CLEANUP_DEST,
                                                                 s.dest_host or "", 0)),
                reason=why, message=f"{msg}; rolling back ({s.attempts} of at most "
                f"{s.max_attempts} destinations tried)",
                updates={"rollback_from": P.PREPARING.value})


def _short(checksum: str | None) -> str:
    """A checksum for a message: its algorithm (``xxh3-128:``) and 12 hex digits. Only shown;
    the operator never computes a checksum, it copies and compares the agents' strings."""
    algorithm, sep, digits = (checksum or "").rpartition(":")
    return algorithm + sep + digits[:12]


def migrated(s: State, o: Observation, now: datetime) -> Step:
    """The disk is copied and the source is off: record checksum and downtime and create Finish on
    the destination."""
    up: StatusPatch = {"source_checksum": o.checksum, "downtime_seconds": o.downtime_seconds,
                       "source_disks": list(o.disks) or None,
                       "powered_off_at": o.powered_off_at, "stopped_at": o.stopped_at,
                       "power_off_wait_seconds": o.power_off_wait_seconds,
                       "power_off": PowerOff(o.power_off) if o.power_off else None}
    up.update(_progress(o))
    if s.deleting:
        return _rollback(s, "Deleted", "Deleted while migrating", off=True, **up)
    off = UpdateInstance("keep", InstancePhase.RESIZING, PowerState.SHUTOFF, unlock=False,
                         message=f"Powered off on {s.source_host}; disk copied to {s.dest_host}")
    how = {"Graceful": "Powered off gracefully (ACPI); ",
           "Forced": "Forced off after the power-off timeout; "}.get(o.power_off or "", "")
    return Step(P.FINISHING, (CreateTask(A.FINISH, s.dest_host or "", 0), off),
                reason="Finishing",
                message=f"{how}{'disk' if how else 'Disk'} copied (checksum "
                f"{_short(o.checksum)}); starting on {s.dest_host}", updates=up)


def step_failed(s: State, o: Observation, now: datetime) -> Step:
    """MigrateDisk or Finish failed (or stalled: ``o.reason``): roll back to the source."""
    how = "stalled" if o.kind is Kind.TASK_STALLED else "failed"
    return _rollback(s, o.reason or f"{s.phase.value}Failed",
                     f"{s.phase.value} {how}: {o.message}")


def stalled_wait(s: State, o: Observation, now: datetime) -> Step:
    """A confirm/revert/rollback step stalled: say so and keep waiting for its agent (a new
    attempt would go to the same silent agent; giving up would strand both copies). The
    message is stable, so a long freeze costs one status write, not one per poll."""
    return Step(s.phase, reason="StepStalled", message=(
        f"{s.current_action} on {o.host} stalled: its agent (or a peer) has been silent "
        "longer than the step window; waiting for it to come back. Nothing else is done "
        "meanwhile; an admin may fix the host or restart its agent."))


def finished(s: State, o: Observation, now: datetime) -> Step:
    """Running on the destination: wait in VerifyResize for the user, with the auto-confirm deadline
    if a window is set."""
    if s.deleting:
        return _rollback(s, "Deleted", "Deleted while finishing")
    # With a health check the timer only delays its first probe (0: at once).
    deadline = (now + timedelta(seconds=s.confirm_window_seconds)
                if s.confirm_window_seconds > 0 or s.health_check else None)
    what = f"health check ({s.health_check}) from" if s.health_check else "auto-confirm at"
    tail = f"; {what} {deadline.isoformat()}" if deadline else ""
    up: StatusPatch = {"verify_deadline": deadline}
    off = s.stopped_at or s.powered_off_at   # an older agent reported only the request
    if o.started_at is not None and off is not None:  # off -> on, whole
        up["downtime_seconds"] = round(max(0.0, (o.started_at - off).total_seconds()), 3)
    return Step(P.VERIFY_RESIZE, (UpdateInstance(
        "keep", InstancePhase.RESIZING, PowerState.RUNNING, unlock=False,
        message=f"Running on {s.dest_host}; the copy on {s.source_host} is kept until confirm"),),
                reason="VerifyResize",
                message=f"Running on {s.dest_host}; confirm or revert{tail}",
                updates=up)


def confirm(s: State, o: Observation, now: datetime) -> Step:
    """The user confirmed: create Confirm to delete the old copy on the source."""
    return Step(P.CONFIRMING, (CreateTask(A.CONFIRM, s.source_host or "", 0),),
                reason="Confirming", message=f"Deleting the old copy on {s.source_host}")


def revert(s: State, o: Observation, now: datetime) -> Step:
    """The user reverted: delete the new copy on the destination, then restart the source."""
    return Step(P.REVERTING, (CreateTask(A.CLEANUP_DEST, s.dest_host or "", 0),),
                reason="Reverting", message=f"Deleting the new copy on {s.dest_host}")


AUTO_CONFIRM_HELD = "AutoConfirmHeld"
"""VerifyResize past its window, but the destination's agent cannot vouch for the copy
there (:attr:`Observation.dest_unvouched`): deleting the source now could lose the VM."""


def verify_tick(s: State, o: Observation, now: datetime) -> Step:
    """In VerifyResize: revert if deleted, confirm once the deadline has passed, otherwise wait."""
    if s.deleting:
        step = revert(s, o, now)
        return Step(step.phase, step.actions, reason="Deleted",
                    message=f"Deleted before confirm: reverting. {step.message}")
    if s.verify_deadline is not None and now >= s.verify_deadline and s.health_check:
        until = now + timedelta(seconds=s.health_window_seconds)
        return Step(s.phase, (CreateTask(A.HEALTH_CHECK, s.dest_host or "", 0),),
                    reason="HealthChecking", message=f"Running on {s.dest_host}; probing "
                    f"{s.health_check} until {until.isoformat()} (confirm if it passes, "
                    "revert if not)", updates={"health_deadline": until})
    if s.verify_deadline is not None and now >= s.verify_deadline and o.dest_unvouched:
        return Step(s.phase, reason=AUTO_CONFIRM_HELD, message=(
            f"Confirm window passed, but {o.dest_unvouched}: not confirming (the source copy "
            "is kept) until the destination is seen alive again; confirm or revert by hand"))
    if s.verify_deadline is not None and now >= s.verify_deadline:
        step = confirm(s, o, now)
        return Step(step.phase, step.actions, reason="AutoConfirmed",
                    message=f"Confirm window passed. {step.message}")
    return Step(s.phase)


def confirmed(s: State, o: Observation, now: datetime) -> Step:
    """The old copy is gone: the destination claim becomes the instance's and the instance is Active
    there, unlocked."""
    return Step(P.CONFIRMED, (CommitClaims(), UpdateInstance(
        "dest", InstancePhase.ACTIVE, PowerState.RUNNING, unlock=True)),
        reason="Confirmed", message=f"Confirmed: the instance lives on {s.dest_host}")


def retry_or_wait(s: State, o: Observation, now: datetime) -> Step:
    """Confirm/revert steps are retried; then the resize waits for an admin (never gives up
    the copy it must keep)."""
    nxt = s.current_attempt + 1
    # A failed CleanupDest or RestoreSource past the power-off may have destroyed the copy
    # that ran, or started the one that was off: the Instance no longer says either
    # (invariant 11) until a later step knows.
    unsure: tuple[Action, ...] = ((UpdateInstance(
        "keep", InstancePhase.RESIZING, PowerState.UNKNOWN, unlock=False,
        message=f"{s.current_action} failed ({o.message}); the instance may be off"),)
        if s.current_action in (A.CLEANUP_DEST, A.RESTORE_SOURCE) and (
            s.phase is P.REVERTING or s.rollback_from not in (None, P.PREPARING.value))
        else ())
    if o.retryable and nxt < s.task_retries:
        host = s.source_host if s.current_action in _SOURCE_ACTIONS else s.dest_host
        assert s.current_action is not None
        return Step(s.phase, (CreateTask(s.current_action, host or "", nxt), *unsure),
                    message=f"{s.current_action} failed ({o.message}); retry {nxt}")
    return Step(s.phase, unsure, reason=f"{s.current_action}Stuck",
                message=f"{s.current_action} failed {nxt} times ({o.message}). An admin must "
                "fix the host, then delete the failed HostTask; the operator recreates it.")


def back_step_done(s: State, o: Observation, now: datetime) -> Step:
    """Reverting/RollingBack: CleanupDest done -> RestoreSource; RestoreSource done -> end.
    A rollback from Migrating runs them the other way round (see :func:`_rollback`); after
    an abandoned destination RestoreSource is the last step (:mod:`.abandon`)."""
    if s.abandoned and s.current_action is A.RESTORE_SOURCE:
        return abandoned_end(s)
    source_first = s.phase is P.ROLLING_BACK and s.restore_source_first
    if s.current_action is A.RESTORE_SOURCE and source_first:
        return Step(s.phase, (CreateTask(A.CLEANUP_DEST, s.dest_host or "", 0),
                              UpdateInstance("source", InstancePhase.RESIZING,
                                             PowerState.RUNNING, unlock=False,
                                             message=f"Running on {s.source_host} again; "
                                             f"cleaning up {s.dest_host}")),
                    message=f"The instance runs on {s.source_host} again; deleting the "
                    f"partial copy on {s.dest_host}")
    if s.current_action is A.CLEANUP_DEST and not source_first:
        acts: tuple[Action, ...] = (CreateTask(A.RESTORE_SOURCE, s.source_host or "", 0),)
        if s.phase is P.REVERTING or s.rollback_from != P.PREPARING.value:
            # Past the power-off the copy just deleted was the only one that could run:
            # until RestoreSource has run the VM is off, and the Instance says so
            # (invariant 11; it said Running since Finish, in Reverting).
            acts += (UpdateInstance("keep", InstancePhase.RESIZING, PowerState.SHUTOFF,
                                    unlock=False, message=f"New copy on {s.dest_host} "
                                    f"deleted; starting the instance on {s.source_host}"),)
        return Step(s.phase, acts,
                    message=f"New copy deleted; starting the instance on {s.source_host}")
    if s.rollback_reason == CANCELLED:   # the user's cancel: its own end (:mod:`.cancel`)
        return Step(P.CANCELLED, (ReleaseDestClaim(), UpdateInstance(
            "source", InstancePhase.ACTIVE, PowerState.RUNNING, unlock=True)),
            reason=CANCELLED, message=f"Cancelled in {s.rollback_from}: the instance runs "
            f"on {s.source_host} again, unchanged")
    end = P.REVERTED if s.phase is P.REVERTING else P.ROLLED_BACK
    cause = f" ({s.rollback_reason})" if s.rollback_reason else ""
    why = (f"Rolled back after {s.rollback_from} failed{cause}" if end is P.ROLLED_BACK
           else "Reverted")
    if end is P.ROLLED_BACK and s.rollback_message:  # what failed, in its own words
        why += f" ({s.rollback_message})"
    # An automatic revert keeps its reason to the end: the health check said no.
    health = end is P.REVERTED and s.reason in HEALTH_FAILED
    if health:
        why = "Reverted because the health check did not pass"
    return Step(end, (ReleaseDestClaim(), UpdateInstance(
        "source", InstancePhase.ACTIVE, PowerState.RUNNING, unlock=True)),
        reason=s.reason if health else end.value,
        message=f"{why}: the instance runs on {s.source_host} again, unchanged")
