"""Host readiness from the heartbeat (issue 9, item 6): a frozen agent's Host is not Ready.

Judged on the operator's own monotonic clock, from when it saw the heartbeat change, never
by comparing the agent's stamp with the operator's clock (issue 18, finding 4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vmresize.api.host import Host, HostStatus
from vmresize.api.meta import Condition, Resources
from vmresize.operator.decisions.liveness import Sighting, sight, stale
from vmresize.operator.decisions.scheduler import NoValidHost, Request, Weights, select
from vmresize.operator.persistence.hostview import HostView
from vmresize.operator.reconcile.hosts import STALE_REASON, stale_update

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MONO = 5000.0


def host(beat: datetime | None = NOW, *, ready: bool = True) -> Host:
    cond = Condition(type="Ready", status="True" if ready else "False",
                     reason="AgentRunning", last_transition_time=NOW - timedelta(hours=1))
    return Host(metadata={"name": "h1", "resourceVersion": "1"},
                status=HostStatus(heartbeat=beat, ready=ready, conditions=[cond],
                                      capacity=Resources(vcpus=8, memory_mib=8704, disk_gib=100)))


def test_a_heartbeat_unchanged_for_longer_than_the_window_turns_the_host_not_ready() -> None:
    marked = stale_update(host(), MONO - 300, MONO, 60, NOW)
    assert marked is not None
    assert marked.status is not None
    assert marked.status.ready is False  # the READY column
    (cond,) = marked.status.conditions
    assert (cond.status, cond.reason) == ("Unknown", STALE_REASON)
    assert "300s" in cond.message
    assert cond.last_transition_time == NOW


def test_a_fresh_or_already_marked_host_is_left_alone() -> None:
    assert stale_update(host(), MONO - 10, MONO, 60, NOW) is None
    marked = stale_update(host(), MONO - 300, MONO, 60, NOW)
    assert marked is not None
    assert stale_update(marked, MONO - 300, MONO, 60, NOW) is None  # no write every tick
    assert stale_update(host(None), None, MONO, 60, NOW) is not None  # never beat at all


def test_a_sighting_moves_on_any_change_of_the_value_even_backwards() -> None:
    first = sight(None, "12:00:00", 10.0)
    assert first == Sighting("12:00:00", 10.0)
    assert sight(first, "12:00:00", 50.0) is first           # unchanged: still heard at 10
    assert sight(first, "11:58:00", 50.0).at == 50.0         # a clock set back is a change
    assert stale(10.0, 71.0, 60)
    assert not stale(10.0, 70.0, 60)
    assert stale(None, 0.0, 60)


@pytest.mark.parametrize("skew", [-90.0, -120.0, 3600.0])
def test_an_agent_clock_off_the_operators_neither_kills_nor_hides_a_host(skew: float) -> None:
    """The demo's case: an agent restarted 90 s behind turned Ready=Unknown and left the
    scheduler; one an hour ahead hid its freeze for that hour. Through the operator's Host
    view (watch events in, the operator's monotonic clock), the scheduler and the Ready
    condition judge only when each heartbeat change was seen."""
    mono = [MONO]
    view = HostView()
    view.sightings.clock = lambda: mono[0]
    window = 60.0

    def beat(at: float, rv: int) -> None:   # one heartbeat, stamped on the agent's clock
        h = host(NOW + timedelta(seconds=skew + at))
        view.put(h.model_copy(update={"metadata": {"name": "h1", "resourceVersion": str(rv)}}
                              ).model_dump(mode="json", by_alias=True, exclude_none=True))

    def verdicts() -> tuple[bool, bool]:
        (w,) = view.hosts()
        ready = stale_update(w.host, w.state.heard, mono[0], window, NOW) is None
        req = Request(vcpus=0, memory_mib=0, disk_gib=0, clock=mono[0],
                      heartbeat_stale_seconds=window)
        schedulable = not isinstance(select(view.states(), req, Weights()), NoValidHost)
        return ready, schedulable

    for t in range(0, 300, 10):   # the agent beats every 10 s: alive all along
        mono[0] = MONO + t
        beat(t, 100 + t)
        assert verdicts() == (True, True), t
    mono[0] += window + 1          # then it freezes: no change seen for longer than the window
    assert verdicts() == (False, False)
    beat(400, 999)                 # it thaws: its next heartbeat is news at once
    assert verdicts() == (True, True)


def test_after_a_start_every_host_has_one_window_of_grace() -> None:
    """The operator has seen nothing yet after a (re)start: a Host it first meets counts as
    heard at that moment (as the node lifecycle controller's grace period), so a dead
    agent's Host is marked one window after the start, not at once and not never."""
    mono = [MONO]
    view = HostView()
    view.sightings.clock = lambda: mono[0]
    view.put(host(NOW - timedelta(days=3)).model_dump(mode="json", by_alias=True,
                                                      exclude_none=True))
    (w,) = view.hosts()
    assert w.state.heard == MONO
    assert stale_update(w.host, w.state.heard, MONO + 60, 60, NOW) is None
    assert stale_update(w.host, w.state.heard, MONO + 61, 60, NOW) is not None
    # The operator's own writes of the Host (claims, this very mark) are no heartbeat.
    view.put(w.host.model_copy(update={"metadata": {"name": "h1", "resourceVersion": "2"}}
                               ).model_dump(mode="json", by_alias=True, exclude_none=True))
    mono[0] += 61
    (w,) = view.hosts()
    assert w.state.heard == MONO
