"""``spec.cancel`` in the transition table: every phase before VerifyResize, each rolled
back as its failure would be, to an end in Cancelled (issue 21, part 3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from vmresize.api.hosttask import TaskAction as A
from vmresize.api.instance import InstancePhase, PowerState
from vmresize.api.resize import CANCELLABLE_PHASES, TERMINAL_PHASES
from vmresize.api.resize import ResizePhase as P
from vmresize.operator.decisions.conditions import resize_conditions
from vmresize.operator.decisions.lifecycle import (
    TABLE,
    CreateTask,
    Kind,
    Observation,
    ReleaseDestClaim,
    State,
    Step,
    UpdateInstance,
    step,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CANCEL = Observation(Kind.CANCEL)
DONE = Observation(Kind.TASK_SUCCEEDED)
ACTION_OF = {P.PREPARING: A.PREPARE, P.MIGRATING: A.MIGRATE_DISK, P.FINISHING: A.FINISH}


def state(phase: P, **kw: Any) -> State:
    base = State(phase=phase, source_host="src", dest_host="dst", attempts=1,
                 current_action=ACTION_OF.get(phase), max_attempts=3, task_retries=3)
    return replace(base, **kw)


def after(s: State, out: Step) -> State:
    """``s`` as the engine records ``out``: its phase, its task and its status updates."""
    task = next((a for a in out.actions if isinstance(a, CreateTask)), None)
    known = {k: v for k, v in out.updates.items() if k in State.__dataclass_fields__}
    return replace(s, phase=out.phase, reason=out.reason or s.reason,
                   current_action=task.action if task else s.current_action, **known)


def walk(s: State) -> tuple[State, list[Step]]:
    """Cancel in ``s``, then let every step of the rollback succeed, to the end."""
    steps = [step(s, CANCEL, NOW)]
    s = after(s, steps[-1])
    while s.phase not in TERMINAL_PHASES:
        steps.append(step(s, DONE, NOW))
        s = after(s, steps[-1])
        assert len(steps) < 6, steps
    return s, steps


def tasks(steps: list[Step]) -> list[A]:
    return [a.action for st in steps for a in st.actions if isinstance(a, CreateTask)]


def test_every_phase_before_verify_resize_has_a_cancel_rule() -> None:
    assert {p for p, k in TABLE if k is Kind.CANCEL} == CANCELLABLE_PHASES | {P.VERIFY_RESIZE}


@pytest.mark.parametrize("phase", sorted(CANCELLABLE_PHASES | {P.VERIFY_RESIZE}))
def test_a_cancel_ends_cancelled_and_never_moves_the_vm_on(phase: P) -> None:
    end, steps = walk(state(phase))
    assert end.phase is P.CANCELLED
    assert end.reason == "Cancelled"
    # Nothing that moves the VM forward or deletes the source is ever asked for.
    assert not {A.MIGRATE_DISK, A.FINISH, A.CONFIRM} & set(tasks(steps))
    last = steps[-1]
    if phase is P.PENDING:   # nothing locked or claimed yet (its own test below)
        return
    assert ReleaseDestClaim() in last.actions
    (inst,) = [a for a in last.actions if isinstance(a, UpdateInstance)]
    assert (inst.placement, inst.phase, inst.unlock) == ("source", InstancePhase.ACTIVE, True)
    assert "unchanged" in (last.message or "") or "nothing was touched" in (last.message or "")


def test_cancel_in_pending_touches_nothing() -> None:
    out = step(state(P.PENDING, dest_host=None), CANCEL, NOW)
    assert (out.phase, out.actions) == (P.CANCELLED, ())


def test_cancel_in_scheduling_releases_the_claim_and_keeps_the_power_state() -> None:
    out = step(state(P.SCHEDULING), CANCEL, NOW)
    assert out.phase is P.CANCELLED
    (inst,) = [a for a in out.actions if isinstance(a, UpdateInstance)]
    assert inst.power is None
    assert inst.unlock


def test_cancel_mid_live_copy_restores_the_source_first_and_never_powers_it_off() -> None:
    out = step(state(P.MIGRATING), CANCEL, NOW)
    assert out.phase is P.ROLLING_BACK
    # RestoreSource supersedes MigrateDisk as currentTask: its agent refuses the power-off.
    assert out.actions[0] == CreateTask(A.RESTORE_SOURCE, "src")
    assert out.updates["rollback_reason"] == "Cancelled"
    assert out.updates["restore_source_first"] is True
    _, steps = walk(state(P.MIGRATING))
    assert tasks(steps) == [A.RESTORE_SOURCE, A.CLEANUP_DEST]
    assert steps[-1].phase is P.CANCELLED


def test_cancel_after_the_power_off_cleans_the_destination_then_starts_the_source() -> None:
    _, steps = walk(state(P.FINISHING, stopped_at=NOW))
    assert tasks(steps) == [A.CLEANUP_DEST, A.RESTORE_SOURCE]
    powers = [a.power for st in steps for a in st.actions if isinstance(a, UpdateInstance)]
    assert powers == [PowerState.SHUTOFF, PowerState.RUNNING]


def test_cancel_met_in_verify_resize_reverts_to_cancelled() -> None:
    out = step(state(P.VERIFY_RESIZE), CANCEL, NOW)
    assert out.phase is P.REVERTING
    assert out.actions == (CreateTask(A.CLEANUP_DEST, "dst"),)
    end, _ = walk(state(P.VERIFY_RESIZE))
    assert end.phase is P.CANCELLED


@pytest.mark.parametrize("phase", sorted(set(P) - CANCELLABLE_PHASES - {P.VERIFY_RESIZE}))
def test_cancel_changes_nothing_in_any_other_phase(phase: P) -> None:
    out = step(state(phase), CANCEL, NOW)
    assert (out.phase, out.actions) == (phase, ())


def test_a_cancelled_rollback_that_fails_is_still_rollback_failed() -> None:
    s = state(P.ROLLING_BACK, current_action=A.RESTORE_SOURCE, rollback_reason="Cancelled",
              rollback_from="Migrating", current_attempt=2)
    assert step(s, Observation(Kind.TASK_FAILED, message="disk gone"), NOW).phase \
        is P.ROLLBACK_FAILED


def test_cancelled_reads_done_and_not_stalled() -> None:
    conds = {c.type: c.status for c in resize_conditions([], P.CANCELLED, "Cancelled", "m",
                                                         NOW, 1)}
    assert conds["Ready"] == "True"
    assert conds["Stalled"] == "False"
    assert conds["Reconciling"] == "False"
