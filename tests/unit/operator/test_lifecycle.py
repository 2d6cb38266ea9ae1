"""The VMResize transition table, exhaustively, with time passed in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vmresize.api.hosttask import TaskAction as A
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import TERMINAL_PHASES
from vmresize.api.resize import ResizePhase as P
from vmresize.operator.decisions.lifecycle import (
    TABLE,
    TASK_PHASES,
    CommitClaims,
    CreateTask,
    Kind,
    Observation,
    ReleaseDestClaim,
    State,
    UpdateInstance,
    progress_display,
    step,
)
from vmresize.operator.decisions.prepare_cleanup import ATTEMPT_BASE

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACTION_OF = {P.PREPARING: A.PREPARE, P.MIGRATING: A.MIGRATE_DISK, P.FINISHING: A.FINISH,
             P.CONFIRMING: A.CONFIRM, P.REVERTING: A.CLEANUP_DEST,
             P.ROLLING_BACK: A.CLEANUP_DEST}


def state(phase: P, **kw: object) -> State:
    base = State(phase=phase, source_host="src", dest_host="dst", attempts=1,
                 alternates=("alt1", "alt2"), current_action=ACTION_OF.get(phase),
                 max_attempts=3, task_retries=3)
    return replace(base, **kw)  # type: ignore[arg-type]


def obs(kind: Kind, **kw: object) -> Observation:
    defaults: dict[str, object] = ({"host": "dst"} if kind in (Kind.SCHEDULED, Kind.CHOSEN)
                                    else {})
    defaults.update(kw)
    return Observation(kind, **defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize("phase", list(P))
@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("deleting", [False, True])
def test_every_phase_and_observation(phase: P, kind: Kind, deleting: bool) -> None:
    s = state(phase, deleting=deleting)
    out = step(s, obs(kind), NOW)
    assert out.phase in set(P)
    if phase in TERMINAL_PHASES:
        assert out.phase is phase, "terminal phases are never left"
    if (phase, kind) not in TABLE:
        assert out.phase is phase, "unlisted pairs change nothing"
        assert not out.actions
    for a in out.actions:
        if isinstance(a, CreateTask):
            assert a.host in {"src", "dst"}, a
    # Once past VerifyResize the resize never rolls back.
    if phase in {P.VERIFY_RESIZE, P.CONFIRMING, P.REVERTING}:
        assert out.phase not in {P.ROLLING_BACK, P.ROLLED_BACK, P.ROLLBACK_FAILED}
    # The source copy is only deleted by a Confirm task, only from VerifyResize/Confirming.
    if any(isinstance(a, CreateTask) and a.action is A.CONFIRM for a in out.actions):
        assert phase in {P.VERIFY_RESIZE, P.CONFIRMING}


def test_table_only_names_real_pairs() -> None:
    for phase, kind in TABLE:
        assert isinstance(phase, P)
        assert isinstance(kind, Kind)
    for phase in TASK_PHASES:
        for kind in (Kind.TASK_WAITING, Kind.TASK_SUCCEEDED, Kind.TASK_FAILED,
                     Kind.TASK_MISSING):
            assert (phase, kind) in TABLE, (phase, kind)


def test_happy_path_resize_then_confirm() -> None:
    s = State(P.PENDING, source_host="src")
    out = step(s, obs(Kind.VALID), NOW)
    assert out.phase is P.SCHEDULING
    out = step(replace(s, phase=out.phase), obs(Kind.SCHEDULED, host="dst",
                                                  alternates=("a", "b")), NOW)
    assert out.phase is P.PREPARING
    assert out.actions == (CreateTask(A.PREPARE, "dst", 0),)
    assert out.updates["dest_host"] == "dst"
    assert out.updates["attempts"] == 1
    s = state(P.PREPARING)
    out = step(s, obs(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.MIGRATING
    assert out.actions[0] == CreateTask(A.MIGRATE_DISK, "src")
    (off,) = out.actions[1:]   # the VM may be off from now on: no longer "Running"
    assert isinstance(off, UpdateInstance)
    assert (off.placement, off.power, off.unlock) == ("keep", PowerState.UNKNOWN, False)
    checksum = "xxh3-128:" + "ab" * 16  # the agents' string; the operator only copies it
    out = step(state(P.MIGRATING), obs(Kind.TASK_SUCCEEDED, checksum=checksum,
                                       downtime_seconds=0.8, progress=(10, 10, 0),
                                       power_off="Graceful"), NOW)
    assert out.phase is P.FINISHING
    assert out.message.startswith("Powered off gracefully (ACPI); disk copied "
                                  "(checksum xxh3-128:abababababab); starting on dst")
    assert out.actions[0] == CreateTask(A.FINISH, "dst")
    off = out.actions[1]
    assert isinstance(off, UpdateInstance)
    assert off.power is PowerState.SHUTOFF
    assert out.updates["source_checksum"] == checksum
    assert out.updates["downtime_seconds"] == 0.8
    out = step(state(P.FINISHING), obs(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.VERIFY_RESIZE
    assert out.updates["verify_deadline"] is None
    (upd,) = out.actions
    assert isinstance(upd, UpdateInstance)
    assert upd.placement == "keep"
    assert not upd.unlock
    out = step(state(P.VERIFY_RESIZE), obs(Kind.CONFIRM), NOW)
    assert out.phase is P.CONFIRMING
    assert out.actions == (CreateTask(A.CONFIRM, "src"),)
    out = step(state(P.CONFIRMING), obs(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.CONFIRMED
    assert out.actions[0] == CommitClaims()
    upd = out.actions[1]
    assert isinstance(upd, UpdateInstance)
    assert upd.placement == "dest"
    assert upd.unlock


def test_revert_deletes_dest_then_restores_source() -> None:
    out = step(state(P.VERIFY_RESIZE), obs(Kind.REVERT), NOW)
    assert out.phase is P.REVERTING
    assert out.actions == (CreateTask(A.CLEANUP_DEST, "dst"),)
    out = step(state(P.REVERTING), obs(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.REVERTING
    assert out.actions[0] == CreateTask(A.RESTORE_SOURCE, "src")
    off = out.actions[1]   # the new copy, the only one that ran, is gone: the VM is off
    assert isinstance(off, UpdateInstance)
    assert off.power is PowerState.SHUTOFF
    out = step(state(P.REVERTING, current_action=A.RESTORE_SOURCE), obs(Kind.TASK_SUCCEEDED),
               NOW)
    assert out.phase is P.REVERTED
    assert out.actions[0] == ReleaseDestClaim()
    upd = out.actions[1]
    assert isinstance(upd, UpdateInstance)
    assert upd.placement == "source"
    assert upd.unlock


def test_verify_resize_waits_with_no_window() -> None:
    out = step(state(P.VERIFY_RESIZE), obs(Kind.TICK), NOW + timedelta(days=365))
    assert out.phase is P.VERIFY_RESIZE
    assert not out.actions


def test_auto_confirm_window() -> None:
    out = step(state(P.FINISHING, confirm_window_seconds=30), obs(Kind.TASK_SUCCEEDED), NOW)
    deadline = out.updates["verify_deadline"]
    assert deadline == NOW + timedelta(seconds=30)
    s = state(P.VERIFY_RESIZE, verify_deadline=deadline)
    assert step(s, obs(Kind.TICK), NOW + timedelta(seconds=29)).phase is P.VERIFY_RESIZE
    out = step(s, obs(Kind.TICK), NOW + timedelta(seconds=30))
    # First the destination is asked whether the domain runs there (issue 18, 7d) ...
    assert out.phase is P.VERIFY_RESIZE
    assert out.reason == "AutoConfirmChecking"
    assert out.actions == (CreateTask(A.HEALTH_CHECK, "dst", 0),)
    looking = replace(s, current_action=A.HEALTH_CHECK)
    out = step(looking, obs(Kind.TASK_SUCCEEDED, message="domain x runs"), NOW)
    assert out.phase is P.CONFIRMING   # ... and confirmed once it says so
    assert out.reason == "AutoConfirmed"


def test_prepare_failure_cleans_the_host_then_tries_the_next_alternate() -> None:
    """Issue 18, finding 7c: what the failed Prepare accepted on ``dst`` (promises, marker)
    is removed there by a CleanupDest before the next alternate; the claim stays until."""
    out = step(state(P.PREPARING), obs(Kind.TASK_FAILED, message="no space"), NOW)
    assert out.phase is P.PREPARING
    assert out.actions == (CreateTask(A.CLEANUP_DEST, "dst", ATTEMPT_BASE + 1),)
    assert out.updates == {"prepare_failure": "no space"}
    assert "no space" in (out.message or "")
    cleaning = state(P.PREPARING, current_action=A.CLEANUP_DEST,
                     current_attempt=ATTEMPT_BASE + 1, prepare_failure="no space")
    for end in (obs(Kind.TASK_SUCCEEDED), obs(Kind.TASK_FAILED, message="EIO"),
                obs(Kind.TASK_STALLED, message="silent")):
        out = step(cleaning, end, NOW)
        assert out.phase is P.SCHEDULING, end
        assert out.actions == (ReleaseDestClaim(),)
        assert out.updates == {"dest_host": None, "prepare_failure": None}
        assert "Preparing dst failed: no space; dst " in (out.message or "")
        assert ("dst cleaned" in (out.message or "")) is (end.kind is Kind.TASK_SUCCEEDED)
    # Deleted meanwhile: the rollback from Preparing, as a failed Prepare's (it cleans).
    out = step(replace(cleaning, deleting=True), obs(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.ROLLING_BACK
    assert CreateTask(A.CLEANUP_DEST, "dst", 0) in out.actions


def test_stalled_prepare_moves_on_at_once() -> None:
    """A silent agent cannot clean up now: no step window is spent waiting for it."""
    out = step(state(P.PREPARING), obs(Kind.TASK_STALLED, message="silent"), NOW)
    assert out.phase is P.SCHEDULING
    assert out.actions == (ReleaseDestClaim(),)


def test_prepare_failure_after_max_attempts_rolls_back() -> None:
    out = step(state(P.PREPARING, attempts=3), obs(Kind.TASK_FAILED), NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.reason == "MaxAttemptsExceeded"
    assert ReleaseDestClaim() in out.actions
    out = step(state(P.PREPARING, alternates=()), obs(Kind.TASK_FAILED), NOW)
    assert out.phase is P.ROLLING_BACK


def test_no_valid_host_first_try_fails_and_unlocks() -> None:
    out = step(state(P.SCHEDULING, attempts=0), obs(Kind.NO_VALID_HOST,
                                                    counts={"RAM": 3, "Enabled": 1}), NOW)
    assert out.phase is P.FAILED
    assert out.reason == "NoValidHost"
    assert "RAM: 3" in (out.message or "")
    assert out.updates["filter_counts"]["RAM"] == 3
    assert any(isinstance(a, UpdateInstance) and a.unlock for a in out.actions)


def test_no_alternate_fits_on_retry_rolls_back() -> None:
    out = step(state(P.SCHEDULING, attempts=2, dest_host=None), obs(Kind.NO_VALID_HOST), NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.actions == (CreateTask(A.RESTORE_SOURCE, "src"),)


@pytest.mark.parametrize("phase", [P.MIGRATING, P.FINISHING])
def test_failure_before_verify_rolls_back(phase: P) -> None:
    out = step(state(phase), obs(Kind.TASK_FAILED, message="boom"), NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.updates["rollback_from"] == phase.value
    # From Migrating no domain exists on the destination: the source starts first.
    first = (CreateTask(A.RESTORE_SOURCE, "src") if phase is P.MIGRATING
             else CreateTask(A.CLEANUP_DEST, "dst"))
    assert out.actions[0] == first
    # ... and the Instance says no more that it runs (MigrateDisk may have powered it off).
    assert [a.power for a in out.actions[1:] if isinstance(a, UpdateInstance)] == (
        [PowerState.UNKNOWN] if phase is P.MIGRATING else [])
    s = state(P.ROLLING_BACK, current_action=A.RESTORE_SOURCE, rollback_from=phase.value)
    out = step(s, obs(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.ROLLED_BACK
    assert phase.value in (out.message or "")


def test_a_flavor_refused_before_the_power_off_is_still_named_when_rolled_back() -> None:
    refusal = ("ns.vm cannot take 2 vCPU and 1536 MiB: 1536 MiB of initial memory is not a "
               "whole number of the 1024 MiB huge pages that back it; refused before any "
               "power-off, the VM was not touched")
    out = step(state(P.MIGRATING), obs(Kind.TASK_FAILED, message=refusal, retryable=False),
               NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.actions[0] == CreateTask(A.RESTORE_SOURCE, "src")
    kept = out.updates["rollback_message"]
    s = state(P.ROLLING_BACK, current_action=A.RESTORE_SOURCE, rollback_from="Migrating",
              rollback_reason=out.updates["rollback_reason"], rollback_message=kept,
              restore_source_first=True)
    out = step(s, obs(Kind.TASK_SUCCEEDED), NOW)   # the source runs (it never stopped)
    assert out.actions[0] == CreateTask(A.CLEANUP_DEST, "dst")
    out = step(replace(s, current_action=A.CLEANUP_DEST), obs(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.ROLLED_BACK
    assert refusal in (out.message or "")   # the end still says why


def test_rollback_failure_keeps_both_copies_and_tells_the_admin() -> None:
    s = state(P.ROLLING_BACK, current_action=A.RESTORE_SOURCE, current_attempt=2)
    out = step(s, obs(Kind.TASK_FAILED, message="disk gone"), NOW)
    assert out.phase is P.ROLLBACK_FAILED
    assert not any(isinstance(a, ReleaseDestClaim | CommitClaims) for a in out.actions)
    (upd,) = out.actions
    assert isinstance(upd, UpdateInstance)
    assert upd.phase is InstancePhase.ERROR
    assert not upd.unlock
    assert "An admin must" in (out.message or "")
    # Non-retryable fails at once.
    out = step(state(P.ROLLING_BACK), obs(Kind.TASK_FAILED, retryable=False), NOW)
    assert out.phase is P.ROLLBACK_FAILED


def test_rollback_step_is_retried_first() -> None:
    out = step(state(P.ROLLING_BACK), obs(Kind.TASK_FAILED), NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.actions == (CreateTask(A.CLEANUP_DEST, "dst", 1),)


def test_confirm_failure_is_retried_then_waits_never_touching_dest() -> None:
    out = step(state(P.CONFIRMING), obs(Kind.TASK_FAILED), NOW)
    assert out.actions == (CreateTask(A.CONFIRM, "src", 1),)
    out = step(state(P.CONFIRMING, current_attempt=2), obs(Kind.TASK_FAILED), NOW)
    assert out.phase is P.CONFIRMING
    assert not out.actions
    assert out.reason == "ConfirmStuck"


def test_missing_task_is_recreated() -> None:
    out = step(state(P.MIGRATING), obs(Kind.TASK_MISSING), NOW)
    assert out.actions == (CreateTask(A.MIGRATE_DISK, "src", 0),)


def test_progress_is_copied() -> None:
    out = step(state(P.MIGRATING), obs(Kind.TASK_WAITING,
                                       progress=(42, 100, 310 * 1024 * 1024)), NOW)
    assert out.updates["progress"].display == "42% 310MiB/s"
    assert progress_display(0, 0, 0) == (0, "0% 0MiB/s")


def test_progress_shows_the_limit_the_copy_runs_under() -> None:
    note = "asked 80 MiB/s, lowered to host dst's migrationBandwidthMiBps 8 MiB/s"
    out = step(state(P.MIGRATING), obs(Kind.TASK_WAITING, progress=(42, 100, 8 << 20),
                                       limit=(8 << 20, note)), NOW)
    p = out.updates["progress"]
    assert p.display == "42% 8MiB/s limit 8MiB/s"
    assert (p.limit_bytes_per_second, p.limit_note) == (8 << 20, note)
    assert p.wire()["limitNote"] == note


@pytest.mark.parametrize("phase", [P.PREPARING, P.MIGRATING, P.FINISHING])
def test_delete_mid_flight_rolls_back_after_the_running_step(phase: P) -> None:
    s = state(phase, deleting=True)
    assert step(s, obs(Kind.TASK_WAITING), NOW).phase is phase
    assert step(s, obs(Kind.TASK_SUCCEEDED), NOW).phase is P.ROLLING_BACK


def test_delete_in_verify_resize_reverts() -> None:
    out = step(state(P.VERIFY_RESIZE, deleting=True), obs(Kind.TICK), NOW)
    assert out.phase is P.REVERTING
    assert out.reason == "Deleted"


def test_delete_before_scheduling_fails_and_releases() -> None:
    assert step(state(P.PENDING, deleting=True), obs(Kind.TICK), NOW).phase is P.FAILED
    out = step(state(P.SCHEDULING, deleting=True), obs(Kind.TICK), NOW)
    assert out.phase is P.FAILED
    assert ReleaseDestClaim() in out.actions


def test_busy_and_invalid_touch_nothing() -> None:
    for kind in (Kind.BUSY, Kind.INVALID):
        out = step(state(P.PENDING), obs(kind, reason="DiskShrink"), NOW)
        assert out.phase is P.FAILED
        assert not out.actions


def test_downtime_runs_from_the_request_when_an_older_agent_reports_no_stop() -> None:
    off = NOW - timedelta(seconds=5)
    out = step(state(P.MIGRATING), obs(Kind.TASK_SUCCEEDED, checksum="ab" * 32,
                                       downtime_seconds=1.5, powered_off_at=off), NOW)
    assert out.updates["powered_off_at"] == off
    assert out.updates["downtime_seconds"] == 1.5  # so far: the copy's end
    out = step(state(P.FINISHING, powered_off_at=off),
               obs(Kind.TASK_SUCCEEDED, started_at=off + timedelta(seconds=2.25)), NOW)
    assert out.phase is P.VERIFY_RESIZE
    assert out.updates["downtime_seconds"] == 2.25  # the whole of it, Finish included
    out = step(state(P.FINISHING), obs(Kind.TASK_SUCCEEDED), NOW)  # an older agent
    assert "downtime_seconds" not in out.updates


def test_downtime_runs_from_the_stop_and_the_grace_wait_is_reported_beside_it() -> None:
    asked = NOW - timedelta(seconds=40)
    stopped = asked + timedelta(seconds=30)   # a guest that ignores ACPI, forced at 30 s
    out = step(state(P.MIGRATING), obs(Kind.TASK_SUCCEEDED, checksum="ab" * 32,
                                       downtime_seconds=1.5, powered_off_at=asked,
                                       stopped_at=stopped, power_off_wait_seconds=30.0,
                                       power_off="Forced"), NOW)
    assert out.updates["powered_off_at"] == asked
    assert out.updates["stopped_at"] == stopped
    assert out.updates["power_off_wait_seconds"] == 30.0
    assert out.updates["power_off"] == "Forced"
    out = step(state(P.FINISHING, powered_off_at=asked, stopped_at=stopped),
               obs(Kind.TASK_SUCCEEDED, started_at=stopped + timedelta(seconds=2.25)), NOW)
    assert out.updates["downtime_seconds"] == 2.25  # not 32.25: the VM ran for 30 of them
