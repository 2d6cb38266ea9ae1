"""The models speak camelCase on the wire and compute what the scheduler needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from vmresize.api import Flavor, Host, VMResize
from vmresize.api.hosttask import TaskAction
from vmresize.api.meta import API_VERSION, Condition, Resources, set_condition
from vmresize.api.naming import disk_path, domain_name, task_name


def test_flavor_round_trips_camel_case() -> None:
    body = {"apiVersion": API_VERSION, "kind": "Flavor",
            "metadata": {"name": "m1.small"},
            "spec": {"vcpus": 2, "memoryMiB": 256, "diskGiB": 2, "ephemeralGiB": 1}}
    flavor = Flavor.from_body(body)
    assert flavor.spec.memory_mib == 256
    assert flavor.spec.resources() == Resources(vcpus=2, memory_mib=256, disk_gib=3)
    assert flavor.wire()["spec"] == {**body["spec"], "swapMiB": 0, "extraSpecs": {}}


def test_swap_counts_against_host_disk_rounded_up_to_a_gib() -> None:
    body = {"apiVersion": API_VERSION, "kind": "Flavor", "metadata": {"name": "m1.swap"},
            "spec": {"vcpus": 1, "memoryMiB": 256, "diskGiB": 2, "ephemeralGiB": 1,
                     "swapMiB": 1536}}
    flavor = Flavor.from_body(body)
    assert flavor.spec.resources() == Resources(vcpus=1, memory_mib=256, disk_gib=5)
    assert flavor.wire()["spec"]["swapMiB"] == 1536
    with pytest.raises(ValueError, match="swapMiB"):
        Flavor.from_body({**body, "spec": {**body["spec"], "swapMiB": -1}})


def test_unknown_spec_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="vpcus"):
        Flavor.from_body({"metadata": {}, "spec": {"vpcus": 2, "memoryMiB": 1, "diskGiB": 1}})


def test_host_allocated_sums_claims() -> None:
    host = Host.from_body({"metadata": {"name": "hv-1"}, "status": {"allocations": {
        "Instance/a/x": {"consumer": "a/x", "kind": "Instance",
                         "resources": {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}},
        "VMResize/a/r": {"consumer": "a/r", "kind": "VMResize",
                         "resources": {"vcpus": 2, "memoryMiB": 256, "diskGiB": 2}},
    }}})
    assert host.allocated() == Resources(vcpus=3, memory_mib=384, disk_gib=3)
    assert host.spec.enabled is True
    assert host.spec.reserved.memory_mib == 512


def test_cold_migration_has_no_flavor() -> None:
    resize = VMResize.from_body({"metadata": {"name": "m"}, "spec": {"instanceName": "web-1"}})
    assert resize.spec.flavor is None
    assert resize.spec.confirm is False
    assert resize.spec.revert is False


def test_condition_transition_time_moves_only_on_change() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=5)
    conds = set_condition([], Condition(type="Ready", status="False"), t0)
    conds = set_condition(conds, Condition(type="Ready", status="False", reason="X"), t1)
    assert conds[0].last_transition_time == t0
    assert conds[0].reason == "X"
    conds = set_condition(conds, Condition(type="Ready", status="True"), t1)
    assert conds[0].last_transition_time == t1
    assert len(conds) == 1


def test_names_are_deterministic_and_confined() -> None:
    uid = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    # The whole UID: a prefix of it collides once there are tens of thousands of owners.
    assert task_name(uid, TaskAction.MIGRATE_DISK, 1) == f"{uid}-migratedisk-1"
    assert len(task_name(uid, TaskAction.RESTORE_SOURCE, 99)) <= 63
    assert domain_name("tenant-a", "web-1") == "tenant-a.web-1"
    assert domain_name("tenant-a", "web-1", "0a1b2c3d") == "tenant-a.web-1.0a1b2c3d"
    assert disk_path("tenant-a", "web-1", uid) == f"instances/tenant-a/web-1/{uid}/disk.qcow2"
