"""A resize and its namespace's VMQuota, step by step over the in-memory storage: refused
in Pending when there is no room; and when another request takes the room between the
check in Pending and the charge (a 409 on the quota's status), refused in Scheduling with
the instance unlocked and nothing claimed (issue 21, part 2)."""

from __future__ import annotations

from tests.support.engine_world import NS, T0, build_world
from tests.support.memstore import MemStorage

from vmresize.api.meta import Resources
from vmresize.api.quota import QuotaCharge, QuotaLimits, VMQuota, VMQuotaSpec, VMQuotaStatus
from vmresize.api.resize import ResizePhase, VMResize
from vmresize.operator.persistence import quota
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

S = Settings(namespace="sys")


def _world(vcpus: int) -> tuple[MemStorage, str]:
    s = build_world(MemStorage(), new_flavor="medium")
    inst = s.instance(NS, "vm")
    assert inst is not None
    key = f"Instance/{inst.uid}"
    s.put(VMQuota(metadata={"name": "q", "namespace": NS},
                  spec=VMQuotaSpec(hard=QuotaLimits(vcpus=vcpus)),
                  status=VMQuotaStatus(charges={key: QuotaCharge(
                      consumer=f"{NS}/vm", kind="Instance", instances=1,
                      resources=Resources(vcpus=1, memory_mib=1024, disk_gib=10))})))
    return s, key


def _resize(s: MemStorage) -> VMResize:
    for _ in range(8):
        r = s.resize(NS, "r")
        assert r is not None
        if r.status is not None and r.status.phase in (ResizePhase.FAILED,
                                                       ResizePhase.PREPARING):
            return r
        engine.reconcile(s, S, NS, "r", T0)
    raise AssertionError("the resize never ended its scheduling")


def _claims(s: MemStorage) -> list[str]:
    return [k for h in s.hosts() for k in (h.status.allocations if h.status else {})
            if k.startswith("VMResize/")]


def test_no_room_in_pending_fails_touching_nothing() -> None:
    s, _key = _world(vcpus=2)
    r = _resize(s)
    assert r.status is not None
    assert (r.status.phase, r.status.reason) == (ResizePhase.FAILED, "QuotaExceeded")
    assert "VMQuota q would be exceeded (vCPUs: 1 used + 2 asked > 2 allowed)" in \
        r.status.message
    inst = s.instance(NS, "vm")
    assert inst is not None
    assert inst.status is not None
    assert inst.status.active_resize_uid is None
    assert not _claims(s)
    assert not s.tasks()


def test_room_taken_between_the_check_and_the_charge_fails_in_scheduling() -> None:
    s, key = _world(vcpus=3)
    taken: list[str] = []

    def another_request(what: str, k: tuple[str, str, str]) -> None:
        if k[0] == "vmquotas" and not taken:   # our charge is about to be written
            taken.append("other")
            assert quota.charge(s, NS, "Instance/other", QuotaCharge(
                consumer=f"{NS}/other", kind="Instance", instances=1,
                resources=Resources(vcpus=1, memory_mib=1024, disk_gib=10))) is None

    s.before_write = another_request
    r = _resize(s)
    assert taken
    assert r.status is not None
    assert (r.status.phase, r.status.reason) == (ResizePhase.FAILED, "QuotaExceeded")
    assert "vCPUs: 2 used + 2 asked > 3 allowed" in r.status.message
    assert ResizePhase.SCHEDULING.value in r.status.phase_timestamps   # got that far
    inst = s.instance(NS, "vm")
    assert inst is not None
    assert inst.status is not None
    assert inst.status.active_resize_uid is None   # unlocked
    assert not _claims(s)                          # no host claim without a charge
    assert not s.tasks()
    q = s.quota(NS, "q")
    assert q is not None
    assert q.status is not None
    assert set(q.status.charges) == {key, "Instance/other"}
    assert q.status.used.vcpus == 2


def test_with_room_the_charge_comes_with_the_claim() -> None:
    s, key = _world(vcpus=3)
    r = _resize(s)
    assert r.status is not None
    assert r.status.phase is ResizePhase.PREPARING
    q = s.quota(NS, "q")
    assert q is not None
    assert q.status is not None
    assert set(q.status.charges) == {key, f"VMResize/{r.uid}"}
    assert _claims(s) == [f"VMResize/{r.uid}"]
