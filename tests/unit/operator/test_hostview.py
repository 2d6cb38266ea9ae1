"""The watch-fed Host view: what it keeps, and that a view that lags never over-commits.

Scheduling chooses from the view; the claim re-reads the Host and is written guarded by
its resourceVersion. These tests give the engine a view frozen before another resize took
the last slot: the stale choice must be refused by the claim and chosen again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.support.engine_world import NS, T0, build_world, ready_host, resize_phase
from tests.support.memstore import MemStorage

from vmresize.api.host import Allocation, Host, HostSpec, HostStatus
from vmresize.api.meta import Resources
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.lifecycle import next_deadline
from vmresize.operator.decisions.vocabulary import Kind, Observation, State
from vmresize.operator.persistence.hostview import HostView, WatchedHost
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

S = Settings(namespace="sys", heartbeat_stale_seconds=1e9)


def _host(name: str, rv: str = "1", mib: int = 8704, **status: Any) -> dict[str, Any]:
    body = Host(metadata={"name": name, "resourceVersion": rv}, spec=HostSpec(),
                status=HostStatus(capacity=Resources(vcpus=8, memory_mib=mib, disk_gib=100),
                                  ready=True, heartbeat=T0, **status)).model_dump(
        mode="json", by_alias=True, exclude_none=True)
    return body


def test_the_view_keeps_the_latest_version_of_each_host_in_name_order() -> None:
    v = HostView()
    v.put(_host("b"))
    v.put(_host("a"))
    first = v.hosts()
    assert [h.host.name for h in first] == ["a", "b"]
    same = v.put(_host("a"))   # the same version again: the same entry, not parsed again
    assert same is first[0]
    v.put(_host("a", rv="2", mib=4096))
    a = v.hosts()[0]
    assert a.host.resource_version == "2"
    assert a.state.memory_mib == 4096
    assert first[0].state.memory_mib == 8704, "a snapshot does not change afterwards"
    v.remove("b")
    assert [h.host.name for h in v.hosts()] == ["a"]


def test_a_host_that_does_not_parse_leaves_the_view() -> None:
    v = HostView()
    v.put(_host("a"))
    bad = _host("a", rv="2")
    bad["status"]["capacity"]["vcpus"] = "many"
    assert v.put(bad) is None
    assert len(v) == 0


class LaggingStorage(MemStorage):
    """A MemStorage whose Host view is a snapshot taken when ``freeze`` was called."""

    frozen: list[WatchedHost] | None = None

    def freeze(self) -> None:
        self.frozen = super().watched_hosts()

    def watched_hosts(self) -> list[WatchedHost]:
        return self.frozen if self.frozen is not None else super().watched_hosts()


def _world() -> LaggingStorage:
    # Each host has room for exactly one "big" (8 GiB) flavor.
    return build_world(LaggingStorage(), new_flavor="big",
                       hosts=[ready_host(h) for h in ("h1", "h2", "h3")],
                       flavors={"small": (1, 1024, 10), "big": (2, 8192, 20)})


def _used_mib(s: MemStorage, host: str) -> int:
    h = s.host(host)
    assert h is not None
    return h.allocated().memory_mib


def test_a_stale_view_costs_a_refused_claim_never_an_overcommit() -> None:
    s = _world()
    s.freeze()   # the view as it was before somebody else filled h2 and h3
    for name in ("h2", "h3"):
        s.patch("hosts", "", name, lambda b: b["status"].setdefault("allocations", {}).update(
            {"VMResize/other": Allocation(consumer="x/y", kind="VMResize", resources=Resources(
                vcpus=2, memory_mib=8192, disk_gib=20)).model_dump(mode="json",
                                                                   by_alias=True)}))
    now = T0
    for _ in range(12):   # while the view lags, each choice is refused and chosen again
        engine.reconcile(s, S, NS, "r", now)
        now += timedelta(seconds=1)
        assert _used_mib(s, "h2") == 8192, "claims are fit-checked on a fresh read"
        assert _used_mib(s, "h3") == 8192
    assert resize_phase(s) is ResizePhase.SCHEDULING
    s.frozen = None   # caught up: nothing fits (no same-host resize by default)
    for _ in range(3):
        engine.reconcile(s, S, NS, "r", now)
    assert resize_phase(s) is ResizePhase.FAILED
    assert _used_mib(s, "h2") == 8192
    assert _used_mib(s, "h3") == 8192


def test_a_view_that_catches_up_schedules_on_the_freed_host() -> None:
    s = _world()
    s.patch("hosts", "", "h2", lambda b: b["status"].setdefault("allocations", {}).update(
        {"VMResize/other": Allocation(consumer="x/y", kind="VMResize", resources=Resources(
            vcpus=2, memory_mib=8192, disk_gib=20)).model_dump(mode="json", by_alias=True)}))
    s.freeze()   # the view shows h2 full; h3 is free in both
    now = T0
    for _ in range(12):
        out = engine.reconcile(s, S, NS, "r", now)
        now += timedelta(seconds=1)
        if not out.changed:
            break
    assert resize_phase(s) is ResizePhase.PREPARING
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.dest_host == "h3"
    assert _used_mib(s, "h3") == 8192


def test_next_deadline_is_the_auto_confirm_time_or_the_observations() -> None:
    verify = State(phase=ResizePhase.VERIFY_RESIZE, verify_deadline=T0)
    assert next_deadline(verify, Observation(Kind.TICK)) == T0
    assert next_deadline(State(phase=ResizePhase.VERIFY_RESIZE), Observation(Kind.TICK)) is None
    soon = T0 - timedelta(seconds=5)
    assert next_deadline(verify, Observation(Kind.TICK, deadline=soon)) == soon
    migrating = State(phase=ResizePhase.MIGRATING, verify_deadline=T0)
    assert next_deadline(migrating, Observation(Kind.TASK_WAITING)) is None


def test_a_full_list_replaces_the_view_and_makes_it_ready() -> None:
    v = HostView()
    v.put(_host("gone"))
    assert not v.ready.is_set()
    assert v.replace([_host("a"), _host("b")]) == ["gone"]
    assert v.ready.is_set()
    assert [h.host.name for h in v.hosts()] == ["a", "b"]


def test_the_view_keeps_scheduler_states_and_claim_holders_per_version() -> None:
    v = HostView()
    claim = {"VMResize/u1": Allocation(consumer="t/r", kind="VMResize", resources=Resources(
        vcpus=1, memory_mib=1024, disk_gib=1)).model_dump(mode="json", by_alias=True)}
    v.put(_host("b", allocations=claim))
    v.put(_host("a"))
    states = v.states()
    assert [s.name for s in states] == ["a", "b"]
    assert states[1].used_memory_mib == 1024
    assert v.states() is states, "built once per version of the view"
    assert v.holders("VMResize/u1") == ["b"]
    copy = v.copy("b")
    assert copy is not None
    assert copy.status is not None
    copy.status.allocations.clear()   # a copy to change: the view's entry stays as it was
    assert v.holders("VMResize/u1") == ["b"]
    v.put(_host("b", rv="2"))   # the claim released
    assert v.holders("VMResize/u1") == []
    assert v.states() is not states
    assert v.states()[1].used_memory_mib == 0
    v.put(_host("a", rv="2", allocations=claim))
    v.remove("a")
    assert v.holders("VMResize/u1") == []
    assert [s.name for s in v.states()] == ["b"]


def test_a_step_after_a_write_that_was_overtaken_decides_again_on_a_read() -> None:
    """The step after a write starts from that write's answer; if the resize changed in
    between (here: deleted) and the step would write nothing, it reads and decides again."""
    s = _world()
    s.patch("instances", NS, "vm", lambda b: b["status"].update(phase="Building"))
    r = s.resize(NS, "r")
    assert r is not None
    s.replace_status(r)   # the operator's own write: the next step starts from its answer
    s.mark_deleted("vmresizes", NS, "r")
    engine.reconcile(s, S, NS, "r", T0)
    assert resize_phase(s) is ResizePhase.FAILED, "the deletion was seen, not the write's answer"
