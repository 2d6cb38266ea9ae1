"""Downtime says what the guest lived through (issue 19 finding 8): it runs from the
moment the source was seen shut off, not from the power-off request; the wait for the
guest (the grace period of one that ignores ACPI) is reported beside it.

libvirt ``test:///default`` and qcow2 files in a temp dir, as in test_executor. The test
driver shuts a domain off as soon as it is asked; a guest without an OS never answers
the ACPI request, so here the request reaches nobody (``shutdown`` does nothing) and the
agent must force it off after the grace period, as on the demo.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.support.agent_steps import names, spawn, spec

from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.vmfiles import disks, markers
from vmresize.api.hosttask import PeerHost, PowerOff, TaskAction

PEER = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")
GRACE = 1


async def test_a_guest_that_ignores_acpi_runs_through_the_grace_and_it_is_not_downtime(
        agent_pair: tuple[Executor, Executor], agent_uid: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = agent_pair
    dom, rel, _, new_rel = names(agent_uid)
    await spawn(a, dom, rel)
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=agent_uid,
                     expected_bytes=disks.GIB))
    assert isinstance(a.hv, LibvirtHypervisor)
    monkeypatch.setattr(a.hv, "shutdown", lambda name: None)  # no OS: ACPI goes unheard
    migrate = spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel, peer=PEER,
                   transfer_id=agent_uid, owner_uid="r-uid", power_off_timeout_seconds=GRACE)
    out = await a.run(migrate)
    ended = datetime.now(UTC)
    r = out.result
    assert r.power_off is PowerOff.FORCED
    assert r.powered_off_at is not None
    assert r.stopped_at is not None
    assert r.power_off_wait_seconds is not None
    assert r.downtime_seconds is not None
    # The VM ran through the grace period: that is the wait, not downtime.
    assert r.power_off_wait_seconds >= GRACE
    assert r.stopped_at - r.powered_off_at >= timedelta(seconds=GRACE)
    assert r.downtime_seconds <= (ended - r.stopped_at).total_seconds() + 0.001
    assert r.downtime_seconds < r.power_off_wait_seconds  # a tiny local copy, not 1 s
    # The moment it stopped is kept with the request: a resumed step (the VM off and held)
    # counts from it, not from when it looked again.
    mark = markers.PowerOff.parse(markers.read(a.root / (rel + markers.POWEROFF_SUFFIX)))
    assert mark is not None
    assert mark.stopped_at is not None
    assert mark.stopped_at == pytest.approx(r.stopped_at.timestamp(), abs=1e-5)
    await asyncio.sleep(0.2)
    again = (await a.run(migrate)).result
    assert again.power_off is None  # found off and held
    assert again.stopped_at == r.stopped_at
    assert again.powered_off_at == r.powered_off_at
    assert again.downtime_seconds is not None
    assert again.downtime_seconds >= r.downtime_seconds + 0.2
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


def test_the_power_off_marker_keeps_the_stop_once_and_reads_the_old_form() -> None:
    old = markers.PowerOff.parse("r-uid/t 100.000000\n")
    assert old == markers.PowerOff("r-uid/t", 100.0, None)
    both = markers.PowerOff("r-uid/t", 100.0, stopped_at=130.5)  # no grace recorded: "-"
    assert markers.PowerOff.parse(both.text()) == both
    every = markers.PowerOff("r-uid/t", 100.0, 60.0, 130.5)
    assert markers.PowerOff.parse(every.text()) == every
    assert markers.PowerOff.parse("r-uid/t 100 60 130 9") is None


def test_stopped_since_records_the_first_sighting_only(tmp_path: Path) -> None:
    path = tmp_path / "d.poweroff"
    assert markers.power_off_since(path, "u/t", 100.0) == 100.0
    assert markers.stopped_since(path, "u/t", 131.0) == 131.0
    assert markers.stopped_since(path, "u/t", 500.0) == 131.0  # a later look changes nothing
    assert markers.power_off_since(path, "u/t", 600.0) == 100.0
    with pytest.raises(ValueError, match="no power-off requested"):
        markers.stopped_since(path, "other/t", 700.0)
