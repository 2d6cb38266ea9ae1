"""The step watchdog: which silences make a step stalled, and what each phase does about it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from vmresize.api.hosttask import TaskAction as A
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import ResizePhase as P
from vmresize.operator.decisions.lifecycle import (
    CreateTask,
    Kind,
    Observation,
    ReleaseDestClaim,
    State,
    UpdateInstance,
    step,
)
from vmresize.operator.decisions.watchdog import TaskClock, next_check, stalled

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MONO = 5000.0   # the operator's monotonic clock, what the watchdog judges on
W = 30.0


def ago(seconds: float) -> float:
    return MONO - seconds


def clock(**kw: object) -> TaskClock:
    base = TaskClock(task="r-migratedisk-0", host="hv1", running=True, heard=ago(3),
                     host_heard=ago(1))
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_running_step_seen_changing_lately_is_not_stalled() -> None:
    assert stalled(clock(), MONO, W) is None


def test_a_running_step_unchanged_for_longer_than_the_window_is_stalled() -> None:
    obs = stalled(clock(heard=ago(31)), MONO, W)
    assert obs is not None
    assert obs.kind is Kind.TASK_STALLED
    assert obs.reason == "StepStalled"
    assert obs.host == "hv1"
    for part in ("r-migratedisk-0", "hv1", "31 s"):
        assert part in obs.message, obs.message


def test_nothing_known_is_no_judgement() -> None:
    assert stalled(clock(heard=None), MONO, W) is None


def test_a_pending_step_stalls_only_when_its_agent_is_silent_too() -> None:
    pending = clock(running=False, heard=ago(300))
    assert stalled(pending, MONO, W) is None, "a live agent that is slow to pick it up"
    obs = stalled(replace(pending, host_heard=ago(45)), MONO, W)
    assert obs is not None
    assert "not started" in obs.message
    # Just seen on a host that went silent long ago: the task gets the window too.
    assert stalled(replace(pending, heard=ago(5), host_heard=ago(500)), MONO, W) is None


def test_a_frozen_peer_stalls_a_copy_whose_own_agent_still_beats() -> None:
    c = clock(peer="hv2", peer_heard=ago(35))
    obs = stalled(c, MONO, W)
    assert obs is not None
    assert "hv2" in obs.message
    assert stalled(replace(c, peer_heard=ago(10)), MONO, W) is None


def test_next_check_is_the_earliest_expiry() -> None:
    c = clock(heard=ago(3), peer="hv2", peer_heard=ago(10))
    assert next_check(c, MONO, W) == W - 10
    assert next_check(clock(heard=None), MONO, W) is None


# -- what the lifecycle does with a stall


def state(phase: P, **kw: object) -> State:
    base = State(phase=phase, source_host="src", dest_host="dst", attempts=1,
                 alternates=("alt1",), max_attempts=3, task_retries=3)
    return replace(base, **kw)  # type: ignore[arg-type]


STALL = Observation(Kind.TASK_STALLED, reason="StepStalled", host="dst",
                    message="HostTask x on host dst: no heartbeat for 40 s")


def test_a_stalled_copy_restarts_the_source_first_then_cleans_the_destination() -> None:
    out = step(state(P.MIGRATING, current_action=A.MIGRATE_DISK), STALL, NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.reason == "StepStalled"
    assert "no heartbeat" in (out.message or "")
    # The destination may be the frozen one: the source comes back without waiting for it.
    assert out.actions == (CreateTask(A.RESTORE_SOURCE, "src"),)
    assert out.updates["restore_source_first"] is True
    assert out.updates["rollback_reason"] == "StepStalled"
    s = state(P.ROLLING_BACK, current_action=A.RESTORE_SOURCE, rollback_from="Migrating",
              restore_source_first=True, rollback_reason="StepStalled")
    out = step(s, Observation(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.ROLLING_BACK
    cleanup, running = out.actions
    assert cleanup == CreateTask(A.CLEANUP_DEST, "dst")
    assert isinstance(running, UpdateInstance)
    assert running.power is PowerState.RUNNING
    assert not running.unlock, "the lock is kept until the destination is clean"
    out = step(replace(s, current_action=A.CLEANUP_DEST), Observation(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.ROLLED_BACK
    assert "StepStalled" in (out.message or "")
    assert any(isinstance(a, ReleaseDestClaim) for a in out.actions)
    assert any(isinstance(a, UpdateInstance) and a.unlock
               and a.phase is InstancePhase.ACTIVE for a in out.actions)


def test_a_stalled_finish_cleans_the_destination_first() -> None:
    # Finish may have started the new copy: it goes before the source runs again.
    out = step(state(P.FINISHING, current_action=A.FINISH), STALL, NOW)
    assert out.phase is P.ROLLING_BACK
    assert out.actions == (CreateTask(A.CLEANUP_DEST, "dst"),)
    assert not out.updates.get("restore_source_first")


def test_a_stalled_prepare_tries_the_next_alternate() -> None:
    out = step(state(P.PREPARING, current_action=A.PREPARE), STALL, NOW)
    assert out.phase is P.SCHEDULING
    assert "no heartbeat" in (out.message or "")


@pytest.mark.parametrize(("phase", "action"), [(P.CONFIRMING, A.CONFIRM),
                                          (P.REVERTING, A.CLEANUP_DEST),
                                          (P.ROLLING_BACK, A.CLEANUP_DEST),
                                          (P.ROLLING_BACK, A.RESTORE_SOURCE)])
def test_a_stalled_back_step_is_reported_and_waited_for(phase: P, action: A) -> None:
    # A retry on the same frozen agent cannot help, and giving up would strand the copies.
    out = step(state(phase, current_action=action), STALL, NOW)
    assert out.phase is phase
    assert not out.actions
    assert out.reason == "StepStalled"
    assert "dst" in (out.message or "")
    again = step(state(phase, current_action=action),
                 replace(STALL, message="HostTask x on host dst: no heartbeat for 45 s"), NOW)
    assert again.message == out.message, "a stable message: no status write every poll"


def test_a_failed_cleanup_after_the_source_runs_again_says_so() -> None:
    s = state(P.ROLLING_BACK, current_action=A.CLEANUP_DEST, rollback_from="Migrating",
              restore_source_first=True)
    out = step(s, Observation(Kind.TASK_FAILED, message="disk busy", retryable=False), NOW)
    assert out.phase is P.ROLLBACK_FAILED
    assert "runs on src again" in (out.message or "")
    (upd,) = out.actions
    assert isinstance(upd, UpdateInstance)
    assert (upd.phase, upd.power, upd.unlock) == (InstancePhase.ACTIVE, PowerState.RUNNING,
                                                  False)
    deleted = step(replace(s, phase=P.ROLLBACK_FAILED, deleting=True), Observation(Kind.TICK),
                   NOW)
    assert any(isinstance(a, UpdateInstance) and a.unlock and a.phase is InstancePhase.ACTIVE
               for a in deleted.actions)
