"""The kubectl plugin's pure parts: plans from models, history medians, lenient parsing,
exit statuses per phase, plain output. No API server: the models are built here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vmresize.api.flavor import Flavor
from vmresize.api.host import Host
from vmresize.api.instance import Instance
from vmresize.api.resize import ResizePhase, VMResize
from vmresize.operator.cli.commands import show_plan
from vmresize.operator.cli.exitcodes import Exit, for_phase
from vmresize.operator.cli.output import Out
from vmresize.operator.cli.planning import history, make_plan
from vmresize.operator.cli.views import parse
from vmresize.operator.settings import Settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def host(name: str, memory_mib: int) -> Host:
    return parse(Host, {"metadata": {"name": name}, "spec": {}, "status": {
        "capacity": {"vcpus": 8, "memoryMiB": memory_mib, "diskGiB": 100},
        "ready": True, "heartbeat": NOW.isoformat()}})


def flavor(name: str, memory_mib: int, disk_gib: int = 10) -> Flavor:
    return parse(Flavor, {"metadata": {"name": name},
                          "spec": {"vcpus": 1, "memoryMiB": memory_mib, "diskGiB": disk_gib}})


def instance(**status: Any) -> Instance:
    return parse(Instance, {"metadata": {"name": "web", "namespace": "ns"},
                            "spec": {"flavor": "small"},
                            "status": {"phase": "Active", "host": "a", "flavor": "small",
                                       "diskGiB": 10, **status}})


def finished(name: str, minutes_ago: int, rate: int, downtime: float | None,
             phase: str = "Confirmed", total: int = 0, inst: str = "other") -> VMResize:
    at = NOW - timedelta(minutes=minutes_ago)
    return parse(VMResize, {"metadata": {"name": name, "namespace": "ns"},
                            "spec": {"instanceName": inst},
                            "status": {"phase": phase, "downtimeSeconds": downtime,
                                       "phaseTimestamps": {"Finishing": at.isoformat()},
                                       "progress": {"rateBytesPerSecond": rate,
                                                    "bytesTotal": total}}})


def settings() -> Settings:
    return Settings.model_validate({})


def test_history_is_the_median_of_the_newest_finished_copies() -> None:
    rs = [finished("r1", 1, 100, 1.0), finished("r2", 2, 300, 3.0), finished("r3", 3, 200, None),
          finished("old", 99, 10_000, 50.0),
          finished("failed", 0, 9, 9.0, phase="RolledBack")]   # its copy never finished
    h = history(rs, last=3)
    assert h.count == 3
    assert h.rate_bytes_per_second == 200
    assert h.downtime_seconds == 2.0
    assert history([], last=10).count == 0


def test_plan_predicts_the_downtime_without_the_grace_and_says_the_wait_apart(
        capsys: pytest.CaptureFixture[str]) -> None:
    def measured(name: str, minutes_ago: int, down: float, wait: float) -> VMResize:
        r = finished(name, minutes_ago, 100 << 20, down, total=300 << 20, inst="web")
        assert r.status is not None
        return r.model_copy(update={"status": r.status.model_copy(update={
            "stopped_at": NOW, "power_off_wait_seconds": wait})})
    # Two moves of guests that ignored ACPI (forced after 30 s), one that answered, and an
    # older operator's figure that counted the grace period as downtime.
    moves = [measured("r3", 1, 1.5, 30.0), measured("r2", 2, 2.0, 30.0),
             measured("r1", 3, 1.0, 0.4), finished("r0", 4, 100 << 20, 31.5, inst="web")]
    h = history(moves, last=10)
    assert h.downtime_seconds == 1.5        # not 16-31 s: the wait is not downtime
    assert h.power_off_wait_seconds == 30.0
    p = make_plan(instance(), flavor("medium", 2048), None, [host("b", 8192)], moves,
                  settings(), NOW)
    show_plan(Out(tty=False), p, "namespace ns", 10)
    out = capsys.readouterr().out
    assert "power-off wait about 30s (the VM still runs); downtime about 1.5s" in out


def test_plan_picks_the_host_with_most_free_ram_and_says_why() -> None:
    hosts = [host("a", 16384), host("b", 4096), host("c", 8192)]
    p = make_plan(instance(), flavor("medium", 2048), None, hosts, [], settings(), NOW)
    verdicts = {h.name: (h.removed_by, h.weight) for h in p.hosts}
    assert p.outcome is not None
    assert p.outcome.host == "c"                    # type: ignore[union-attr]
    assert verdicts["a"] == ("SameHost", None)
    assert verdicts["c"][1] == 1.0
    assert p.refused is None
    assert p.moved_bytes is None                    # never moved: not invented
    assert p.copy_seconds is None


def test_plan_when_nothing_fits_has_the_scheduler_counts(
        capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [host("a", 16384), host("b", 1024), host("c", 2048)]
    p = make_plan(instance(), flavor("big", 8192), None, hosts, [], settings(), NOW)
    assert show_plan(Out(tty=False), p, "all namespaces", 10) is Exit.NO_VALID_HOST
    out = capsys.readouterr().out
    assert "NoValidHost: none of 3 hosts fits" in out
    assert "SameHost=1" in out
    assert "RAM=2" in out
    assert "history: no history (no finished disk copy in all namespaces): no prediction" in out
    assert "\x1b" not in out


def test_plan_predicts_from_the_last_move_and_refuses_a_shrink(
        capsys: pytest.CaptureFixture[str]) -> None:
    moves = [finished("r1", 5, 100 << 20, 2.0, total=300 << 20, inst="web"),
             finished("r0", 50, 100 << 20, 4.0, total=999 << 20, inst="web")]
    p = make_plan(instance(diskGiB=20), flavor("medium", 2048, disk_gib=10), None,
                  [host("b", 8192)], moves, settings(), NOW)
    assert p.moved_bytes == 300 << 20               # the newest move of this instance
    assert p.copy_seconds == 3.0
    assert p.bound_seconds == 20 * 1024 / 100
    assert p.refused is not None
    assert p.refused.startswith("DiskShrink")
    assert show_plan(Out(tty=False), p, "namespace ns", 10) is Exit.FAILED
    out = capsys.readouterr().out
    assert "prediction: copy about 3.0s; at most 3m24s for the whole virtual size; downtime " \
           "about 3.0s" in out


def test_unknown_fields_of_a_newer_operator_are_ignored() -> None:
    r = parse(VMResize, {"metadata": {"name": "r"}, "spec": {"instanceName": "web",
                                                             "somethingNew": 1},
                         "status": {"phase": "Migrating", "flavorSnapshot": {"vcpus": 2},
                                    "progress": {"bytesDone": 5, "newGauge": 3},
                                    "candidates": [{"host": "a", "weight": 1, "extra": 0}]}})
    assert r.status is not None
    assert r.status.progress.bytes_done == 5
    assert r.status.candidates[0].host == "a"


@pytest.mark.parametrize(("phase", "reason", "code"), [
    ("VerifyResize", "", Exit.OK), ("Confirmed", "", Exit.OK), ("Reverted", "", Exit.OK),
    ("RolledBack", "MigrateDiskFailed", Exit.FAILED), ("Failed", "DiskShrink", Exit.FAILED),
    ("Failed", "NoValidHost", Exit.NO_VALID_HOST),
    ("RollbackFailed", "", Exit.ROLLBACK_FAILED),
])
def test_a_rolled_back_resize_is_never_success(phase: str, reason: str, code: Exit) -> None:
    assert for_phase(ResizePhase(phase), reason) is code


def limited_host(name: str, memory_mib: int, mibps: int | None) -> Host:
    h = host(name, memory_mib)
    h.spec.migration_bandwidth_mibps = mibps
    return h


def test_plan_predicts_with_the_bandwidth_limit(capsys: pytest.CaptureFixture[str]) -> None:
    # Measured 100 MiB/s unlimited; a copy limited to 25 MiB/s measured its limit, not the
    # network, and is left out of the median.
    moves = [finished("r1", 5, 100 << 20, 2.0, total=300 << 20, inst="web"),
             finished("lim", 1, 25 << 20, 2.0, total=300 << 20)]
    moves[1].status.progress.limit_bytes_per_second = 25 << 20  # type: ignore[union-attr]
    hosts = [limited_host("a", 16384, 100), limited_host("b", 8192, 50)]
    p = make_plan(instance(), flavor("medium", 2048), None, hosts, moves, settings(), NOW,
                  bandwidth_mibps=80)
    assert p.history.rate_bytes_per_second == 100 << 20
    assert p.limit.mibps == 50                 # the destination's, lower than the asked 80
    assert p.copy_seconds == 300 / 50
    show_plan(Out(tty=False), p, "namespace ns", 10)
    out = capsys.readouterr().out
    assert "bandwidth: the copy runs under 50 MiB/s (asked 80 MiB/s, lowered to host b's " \
           "migrationBandwidthMiBps 50 MiB/s)" in out
    assert "prediction: copy about 6.0s" in out
    # No history at all: the limit alone predicts (a lower bound).
    p = make_plan(instance(), flavor("medium", 2048), None, hosts, [], settings(), NOW,
                  bandwidth_mibps=10)
    assert p.limit.mibps == 10
    assert p.bound_seconds == 10 * 1024 / 10
    show_plan(Out(tty=False), p, "namespace ns", 10)
    out = capsys.readouterr().out
    assert "predicted at the limit alone" in out
    assert "at most 17m04s for the whole virtual size" in out
