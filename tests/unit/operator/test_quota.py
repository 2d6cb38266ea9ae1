"""VMQuota arithmetic and its guarded charges (issue 21, part 2), with no Kubernetes: the
pure rules, and the ledger on the in-memory storage whose 409s are the API server's."""

from __future__ import annotations

from tests.support.memstore import MemStorage

from vmresize.api.meta import Resources
from vmresize.api.quota import QuotaCharge, QuotaLimits, QuotaUsage, VMQuota, VMQuotaSpec
from vmresize.operator.decisions import quota as rules
from vmresize.operator.persistence import quota

NS = "team"


def inst(name: str, vcpus: int = 1, mib: int = 1024, gib: int = 10) -> QuotaCharge:
    return QuotaCharge(consumer=f"{NS}/{name}", kind="Instance", instances=1,
                       resources=Resources(vcpus=vcpus, memory_mib=mib, disk_gib=gib))


def resize(name: str, vcpus: int = 2) -> QuotaCharge:
    return QuotaCharge(consumer=f"{NS}/{name}", kind="VMResize", instances=0,
                       resources=Resources(vcpus=vcpus, memory_mib=2048, disk_gib=20))


def test_a_refusal_names_every_limit_it_would_pass_with_the_numbers() -> None:
    hard = QuotaLimits(instances=2, vcpus=3, memory_mib=4096)
    have = {"Instance/1": inst("a", 2), "Instance/2": inst("b", 1)}
    why = rules.exceeded("q", hard, have, "Instance/3", inst("c", 1))
    assert why == ("VMQuota q would be exceeded (instances: 2 used + 1 asked > 2 allowed; "
                   "vCPUs: 3 used + 1 asked > 3 allowed)")
    assert rules.exceeded("q", QuotaLimits(), have, "Instance/3", inst("c", 99)) is None


def test_a_resize_counts_beside_its_instance_and_a_recharge_is_not_counted_twice() -> None:
    hard = QuotaLimits(vcpus=3)
    have = {"Instance/1": inst("a", 1)}
    assert rules.exceeded("q", hard, have, "VMResize/9", resize("r", 2)) is None
    have["VMResize/9"] = resize("r", 2)
    assert rules.exceeded("q", hard, have, "VMResize/9", resize("r", 2)) is None
    assert "vCPUs: 3 used + 1 asked > 3 allowed" in (
        rules.exceeded("q", hard, have, "Instance/2", inst("b", 1)) or "")
    assert rules.usage(have.values()) == QuotaUsage(instances=1, vcpus=3, memory_mib=3072,
                                                    disk_gib=30)
    assert rules.headroom(hard, rules.usage(have.values()))["vcpus"] == 0


def test_resync_counts_what_hosts_hold_and_drops_only_gone_holders() -> None:
    charges = {"Instance/1": inst("a"), "Instance/gone": inst("x"), "VMResize/new": resize("r")}
    held = {"Instance/1": inst("a"), "Instance/old": inst("o")}   # a claim made before q
    out = rules.resync(charges, held, frozenset({"Instance/1", "VMResize/new"}))
    assert set(out) == {"Instance/1", "Instance/old", "VMResize/new"}


def _store(**hard: int) -> MemStorage:
    s = MemStorage()
    s.put(VMQuota(metadata={"name": "q", "namespace": NS},
                  spec=VMQuotaSpec(hard=QuotaLimits(**hard))))
    return s


def test_a_charge_that_loses_the_race_is_decided_again_and_refused() -> None:
    s = _store(vcpus=2)
    raced = []

    def before_write(what: str, key: tuple[str, str, str]) -> None:
        # Another operator's charge lands between our read and our write: a 409 for us.
        if key[0] == "vmquotas" and not raced:
            raced.append(key)
            assert quota.charge(s, NS, "Instance/other", inst("other", 2)) is None
    s.before_write = before_write
    refusal = quota.charge(s, NS, "Instance/mine", inst("mine", 1))
    assert refusal is not None
    assert "vCPUs: 2 used + 1 asked > 2 allowed" in refusal
    q = s.quota(NS, "q")
    assert q is not None
    assert q.status is not None
    assert set(q.status.charges) == {"Instance/other"}
    assert q.status.used.vcpus == 2
    assert (q.status.reason, q.status.message) == ("QuotaExceeded", refusal)
    assert {c.type: c.status for c in q.status.conditions}["Exhausted"] == "True"


def test_transfer_and_release_keep_the_usage_in_step_with_the_claims() -> None:
    s = _store(vcpus=4)
    assert quota.charge(s, NS, "Instance/1", inst("a", 1)) is None
    assert quota.charge(s, NS, "VMResize/9", resize("r", 3)) is None
    assert quota.charge(s, NS, "Instance/2", inst("b", 1)) is not None   # full: 1 + 3
    quota.transfer(s, NS, "VMResize/9", "Instance/1", consumer=f"{NS}/a")
    q = s.quota(NS, "q")
    assert q is not None
    assert q.status is not None
    assert set(q.status.charges) == {"Instance/1"}
    assert q.status.used == QuotaUsage(instances=1, vcpus=3, memory_mib=2048, disk_gib=20)
    quota.release(s, NS, "Instance/1")
    q = s.quota(NS, "q")
    assert q is not None
    assert q.status is not None
    assert q.status.used == QuotaUsage()


def test_no_quota_limits_nothing() -> None:
    assert quota.charge(MemStorage(), NS, "Instance/1", inst("a", 999)) is None
