"""Health-gated auto-confirm in the transition table (pure, time passed in)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vmresize.api.hosttask import TaskAction as A
from vmresize.api.resize import ResizePhase as P
from vmresize.operator.decisions import conditions
from vmresize.operator.decisions.health import VERDICT_GRACE
from vmresize.operator.decisions.lifecycle import (
    TABLE,
    CreateTask,
    Kind,
    Observation,
    State,
    step,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CHECK = "tcp 10.0.0.5:22"
DEADLINE = NOW + timedelta(seconds=60)


def verify(**kw: object) -> State:
    """In VerifyResize with a check; by default its HealthCheck task runs."""
    base = State(phase=P.VERIFY_RESIZE, source_host="src", dest_host="dst", attempts=1,
                 current_action=A.HEALTH_CHECK, task_retries=3, health_check=CHECK,
                 health_window_seconds=60, health_deadline=DEADLINE)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_finishing_with_a_check_starts_the_timer_at_once_by_default() -> None:
    s = State(P.FINISHING, source_host="src", dest_host="dst", current_action=A.FINISH,
              health_check=CHECK, health_window_seconds=60)
    out = step(s, Observation(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.VERIFY_RESIZE
    assert out.updates["verify_deadline"] == NOW
    assert CHECK in (out.message or "")


def test_finishing_with_a_check_and_a_delay() -> None:
    s = State(P.FINISHING, source_host="src", dest_host="dst", current_action=A.FINISH,
              health_check=CHECK, health_window_seconds=60, confirm_window_seconds=20)
    out = step(s, Observation(Kind.TASK_SUCCEEDED), NOW)
    assert out.updates["verify_deadline"] == NOW + timedelta(seconds=20)


def test_the_deadline_creates_the_health_check_on_the_destination() -> None:
    s = verify(current_action=None, health_deadline=None,
               verify_deadline=NOW + timedelta(seconds=5))
    assert step(s, Observation(Kind.TICK), NOW).phase is P.VERIFY_RESIZE
    assert not step(s, Observation(Kind.TICK), NOW).actions
    out = step(s, Observation(Kind.TICK), NOW + timedelta(seconds=5))
    assert out.phase is P.VERIFY_RESIZE, "a check never confirms on the timer alone"
    assert out.actions == (CreateTask(A.HEALTH_CHECK, "dst", 0),)
    assert out.reason == "HealthChecking"
    assert out.updates["health_deadline"] == NOW + timedelta(seconds=65)


def test_a_passed_check_confirms() -> None:
    out = step(verify(), Observation(Kind.TASK_SUCCEEDED, message="tcp open"), NOW)
    assert out.phase is P.CONFIRMING
    assert out.actions == (CreateTask(A.CONFIRM, "src", 0),)
    assert out.reason == "HealthCheckPassed"
    assert "tcp open" in (out.message or "")


def test_a_failed_check_reverts_with_the_reason() -> None:
    out = step(verify(), Observation(Kind.TASK_FAILED, message="connection refused",
                                     retryable=False), NOW)
    assert out.phase is P.REVERTING
    assert out.actions == (CreateTask(A.CLEANUP_DEST, "dst", 0),)
    assert out.reason == "HealthCheckFailed"
    assert "connection refused" in (out.message or "")


def test_a_retryable_failure_is_retried_within_the_window() -> None:
    out = step(verify(), Observation(Kind.TASK_FAILED, message="cannot read the owner"), NOW)
    assert out.phase is P.VERIFY_RESIZE
    assert out.actions == (CreateTask(A.HEALTH_CHECK, "dst", 1),)
    late = step(verify(), Observation(Kind.TASK_FAILED, message="x"), DEADLINE)
    assert late.phase is P.REVERTING
    spent = step(verify(current_attempt=2), Observation(Kind.TASK_FAILED, message="x"), NOW)
    assert spent.phase is P.REVERTING


def test_no_verdict_in_time_reverts() -> None:
    s = verify()
    assert step(s, Observation(Kind.TASK_WAITING), DEADLINE).phase is P.VERIFY_RESIZE
    out = step(s, Observation(Kind.TASK_WAITING), DEADLINE + VERDICT_GRACE)
    assert out.phase is P.REVERTING
    assert out.reason == "HealthCheckTimedOut"


def test_a_missing_check_is_created_again() -> None:
    out = step(verify(current_attempt=1), Observation(Kind.TASK_MISSING), NOW)
    assert out.phase is P.VERIFY_RESIZE
    assert out.actions == (CreateTask(A.HEALTH_CHECK, "dst", 1),)


@pytest.mark.parametrize("kind", [Kind.TASK_WAITING, Kind.TASK_SUCCEEDED, Kind.TASK_FAILED,
                                  Kind.TASK_MISSING, Kind.TICK])
def test_deleting_while_checking_reverts_never_confirms(kind: Kind) -> None:
    out = step(verify(deleting=True), Observation(kind), NOW)
    assert out.phase is P.REVERTING
    assert out.reason == "Deleted"


@pytest.mark.parametrize("kind", [Kind.TASK_WAITING, Kind.TASK_SUCCEEDED, Kind.TASK_FAILED,
                                  Kind.TASK_MISSING])
def test_task_observations_without_a_check_change_nothing(kind: Kind) -> None:
    out = step(verify(health_check="", current_action=None), Observation(kind), NOW)
    assert out.phase is P.VERIFY_RESIZE
    assert not out.actions


def test_the_user_still_decides_while_the_check_runs() -> None:
    assert step(verify(), Observation(Kind.REVERT), NOW).phase is P.REVERTING
    assert step(verify(), Observation(Kind.CONFIRM), NOW).phase is P.CONFIRMING


def test_a_revert_after_a_failed_check_ends_with_that_reason() -> None:
    s = State(P.REVERTING, source_host="src", dest_host="dst",
              current_action=A.RESTORE_SOURCE, reason="HealthCheckFailed")
    out = step(s, Observation(Kind.TASK_SUCCEEDED), NOW)
    assert out.phase is P.REVERTED
    assert out.reason == "HealthCheckFailed"
    assert "health check" in (out.message or "")
    plain = step(replace(s, reason="Reverting"), Observation(Kind.TASK_SUCCEEDED), NOW)
    assert plain.reason == "Reverted"


def test_every_verify_resize_task_pair_is_in_the_table() -> None:
    for kind in (Kind.TASK_WAITING, Kind.TASK_SUCCEEDED, Kind.TASK_FAILED, Kind.TASK_MISSING):
        assert (P.VERIFY_RESIZE, kind) in TABLE


def test_healthy_condition_follows_the_verdict() -> None:
    out = conditions.resize_conditions([], P.CONFIRMING, "HealthCheckPassed", "ok", NOW, 1)
    healthy = {c.type: c for c in out}["Healthy"]
    assert (healthy.status, healthy.reason) == ("True", "HealthCheckPassed")
    out = conditions.resize_conditions(out, P.REVERTING, "HealthCheckFailed", "refused",
                                       NOW, 1)
    healthy = {c.type: c for c in out}["Healthy"]
    assert (healthy.status, healthy.reason, healthy.message) == (
        "False", "HealthCheckFailed", "refused")
    # Later phases keep the verdict.
    out = conditions.resize_conditions(out, P.REVERTED, "Reverted", "done", NOW, 1)
    assert {c.type: c for c in out}["Healthy"].status == "False"
    assert "Healthy" not in {c.type for c in conditions.resize_conditions(
        [], P.CONFIRMED, "Confirmed", "", NOW, 1)}
