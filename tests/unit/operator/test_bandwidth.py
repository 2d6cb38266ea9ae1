"""The limit a disk copy runs under: the lowest of the resize's and both hosts' (pure), as
the MigrateDisk HostTask carries it, and as the resize's progress shows it."""

from __future__ import annotations

import pytest

from vmresize.api.flavor import FlavorSpec
from vmresize.api.host import Host, HostSpec
from vmresize.api.hosttask import HostTaskSpec, TaskAction
from vmresize.operator.decisions.bandwidth import Limit, effective
from vmresize.operator.decisions.lifecycle import progress_display
from vmresize.operator.decisions.tasks import resize_task

from .test_task_files import world

MiB = 1024 * 1024


@pytest.mark.parametrize(("asked", "src", "dst", "want"), [
    (None, None, None, Limit(None)),
    (50, None, None, Limit(50)),
    (None, 100, 40, Limit(40)),
    (30, 100, 40, Limit(30)),
    (40, 100, 40, Limit(40)),
    (80, 100, 40, Limit(40, "asked 80 MiB/s, lowered to host b's "
                           "migrationBandwidthMiBps 40 MiB/s")),
    (200, 100, None, Limit(100, "asked 200 MiB/s, lowered to host a's "
                                "migrationBandwidthMiBps 100 MiB/s")),
])
def test_the_lowest_limit_wins_and_a_lowered_one_says_why(
        asked: int | None, src: int | None, dst: int | None, want: Limit) -> None:
    assert effective(asked, ("a", src), ("b", dst)) == want


def test_migrate_disk_carries_the_effective_and_the_hosts_limit() -> None:
    r, inst, dest = world()
    r.spec.bandwidth_mibps = 64
    dest.spec = HostSpec(migration_bandwidth_mibps=16)
    source = Host(metadata={"name": "a"}, spec=HostSpec(migration_bandwidth_mibps=100))

    def build(action: TaskAction) -> HostTaskSpec:
        return resize_task(action, "a", 0, namespace="sys", resize=r, inst=inst,
                           new=FlavorSpec(vcpus=2, memory_mib=2048, disk_gib=2), old=None,
                           dest=dest, source=source).spec

    spec = build(TaskAction.MIGRATE_DISK)
    assert spec.bandwidth_mibps == 16
    assert spec.host_bandwidth_mibps == 100
    assert "lowered to host b's" in spec.bandwidth_note
    wire = spec.wire()
    assert wire["bandwidthMiBps"] == 16
    assert wire["hostBandwidthMiBps"] == 100
    prepare = build(TaskAction.PREPARE)
    assert prepare.bandwidth_mibps is None


def test_progress_shows_the_limit() -> None:
    assert progress_display(42, 100, 8 * MiB, 8 * MiB) == (42, "42% 8MiB/s limit 8MiB/s")
    assert progress_display(42, 100, 310 * MiB) == (42, "42% 310MiB/s")
