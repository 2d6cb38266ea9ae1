"""The agent's metrics module: steps timed by outcome, errors by their innermost class."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from vmresize.agent import metrics
from vmresize.agent.errors import ConnectionLostError, StepError, TaskRefusedError


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_reason_is_the_innermost_agent_error() -> None:
    lost = ConnectionLostError("lost")
    lost.__cause__ = OSError("reset by peer")
    step = StepError("MigrateDisk: lost", retryable=True)
    step.__cause__ = lost
    assert metrics.reason(step) == "ConnectionLostError"
    assert metrics.reason(TaskRefusedError("no")) == "TaskRefusedError"
    assert metrics.reason(KeyError("bug")) == "Unexpected"


def test_step_records_outcome_in_flight_and_errors() -> None:
    ok = value("vmresize_agent_step_duration_seconds_count", action="T1", outcome="succeeded")
    bad = value("vmresize_agent_step_duration_seconds_count", action="T1", outcome="retryable")
    errs = value("vmresize_agent_errors_total", reason="ConnectionLostError")
    clock = iter([10.0, 12.5, 20.0, 21.0])
    with metrics.step("T1", clock=lambda: next(clock)) as rec:
        assert value("vmresize_agent_tasks_in_flight", action="T1") == 1
        rec.progress(None)(5, 10, 300.0)
        assert value("vmresize_agent_transfer_rate_bytes_per_second") == 300.0
    assert value("vmresize_agent_tasks_in_flight", action="T1") == 0
    assert value("vmresize_agent_transfer_rate_bytes_per_second") == 0.0
    assert value("vmresize_agent_step_duration_seconds_count", action="T1",
                 outcome="succeeded") == ok + 1
    assert value("vmresize_agent_step_duration_seconds_sum", action="T1",
                 outcome="succeeded") >= 2.5
    with pytest.raises(ConnectionLostError), metrics.step("T1", clock=lambda: next(clock)):
        raise ConnectionLostError("gone")
    assert value("vmresize_agent_step_duration_seconds_count", action="T1",
                 outcome="retryable") == bad + 1
    assert value("vmresize_agent_errors_total", reason="ConnectionLostError") == errs + 1
