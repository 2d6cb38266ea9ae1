"""One step's progress adds up over every file it sends (several disks, and pre-copy's
sends before and after the power-off), so watchers see one count for the whole move."""

from __future__ import annotations

from vmresize.agent.transfer.seam import StepProgress


def test_sends_add_up_across_files_and_phases() -> None:
    seen: list[tuple[int, int]] = []
    step = StepProgress(lambda done, total, rate: seen.append((done, total)))
    root = step.next_send()
    assert root is not None
    root(10, 100, 1.0)
    root(100, 100, 1.0)
    data = step.next_send()           # the next disk: counted after the root's 100
    assert data is not None
    data(0, 50, 1.0)
    data(50, 50, 1.0)
    delta = step.next_send()          # after the power-off: the overlays
    assert delta is not None
    delta(4, 4, 1.0)
    assert seen == [(10, 100), (100, 100), (100, 150), (150, 150), (154, 154)]


def test_a_send_that_reports_nothing_adds_nothing() -> None:
    seen: list[tuple[int, int]] = []
    step = StepProgress(lambda done, total, rate: seen.append((done, total)))
    step.next_send()                  # shared storage, or swap: no bytes crossed
    second = step.next_send()
    assert second is not None
    second(7, 7, 0.0)
    assert seen == [(7, 7)]


def test_without_a_reporter_there_is_no_callback() -> None:
    assert StepProgress(None).next_send() is None
