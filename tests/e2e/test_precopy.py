"""Pre-copy on real QEMU: a guest that writes all along moves with a short downtime, and
an agent killed in any phase resumes or rolls back without touching the source's chain.

Two in-process hosts (:mod:`tests.support.precopy_rig`): real executors, the real asyncssh
transfer on 127.0.0.1, the booting test guest with its writer on ``vdb`` (fsync'd,
numbered records until the ACPI power-off), one embedded libvirt. What is checked:

* the live phase: the VM keeps running on overlays while its frozen disks are sent; an
  agent killed mid-copy resumes (the overlays are not made twice);
* the delta: an agent killed while sending the overlays (the VM off) resumes; the chain
  as it stood at power-off (disks + overlays) keeps its sha256 through Finish, a repeated
  MigrateDisk and the whole VerifyResize, until Confirm deletes all of it;
* the destination never starts on unverified data: an overlay whose checksum is not the
  source's makes Finish refuse before anything is merged or defined;
* the writer's last record before the power-off is on the destination's disk, and it was
  written during the copy (the frozen disk does not have it);
* rollback before the power-off merges the overlays back live (the VM never stops);
  revert after it starts the VM on the chain as it stood, then merges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack import guest_domain as gd
from hack.guest import Guest
from tests.support.checksum import file_disk_checksum
from tests.support.precopy_rig import (
    INSTANCE_DIR,
    Killed,
    Rig,
    hypervisor,
    rig,
    run,
    writer_records,
)

from vmresize.agent.errors import StepError
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.vmfiles import markers
from vmresize.api.vmdisks import OVERLAY_SUFFIX, DiskRole, VMDisk

OV = OVERLAY_SUFFIX


@pytest.fixture(scope="module")
def hv(embedded_root: Path) -> Iterator[LibvirtHypervisor]:
    h = hypervisor(embedded_root)
    yield h
    h.close()


def src(r: Rig, name: str) -> Path:
    return r.root("a") / INSTANCE_DIR / name


def sent_sums(sent: list[VMDisk]) -> dict[str, str]:
    return {Path(f.path).name: f.checksum or "" for f in sent if f.path.endswith(".qcow2")}


def disk_sums(r: Rig) -> dict[str, str]:
    """The disk checksum (what the agents report) of every file of the source's chain."""
    return {p.name: file_disk_checksum(p)
            for p in sorted((r.root("a") / INSTANCE_DIR).glob("*.qcow2"))}


def on_overlays(r: Rig) -> bool:
    tops = r.hv.disk_tops(r.name)
    return {t: p.name for t, p in tops.items()} == {"vda": "root.qcow2" + OV,
                                                     "vdb": "data.qcow2" + OV}


def test_killed_in_every_phase_the_chain_holds_and_the_writes_arrive(
        guest: Guest, hv: LibvirtHypervisor) -> None:
    asyncio.run(_killed_in_every_phase(guest, hv))


async def _killed_in_every_phase(guest: Guest, hv: LibvirtHypervisor) -> None:
    async with rig(guest, hv, "pck") as r:
        r.make_vm(data_mib=96)
        await r.booted()
        await run(r.executor("b")[0], r.prepare())

        # 1. killed during the live copy (the root disk half sent): the VM runs on
        a, crash = r.executor("a", crash=f"{r.tid}-0", after=0.1)
        with pytest.raises(Killed):
            await run(a, r.migrate())
        assert crash.hit
        assert hv.state(r.name) == PowerState.RUNNING
        assert on_overlays(r)
        record = markers.read(src(r, "root.qcow2.precopy"))
        assert record is not None
        assert '"sent": []' in record

        # 2. a new agent resumes, copies live, powers off, and is killed in the delta
        a, crash = r.executor("a", crash=f"{r.tid}-1-ov", after=0.0)
        with pytest.raises(Killed):
            await run(a, r.migrate())
        assert crash.hit
        assert not hv.exists(r.name)  # off and held
        at_off = r.chain()
        assert set(at_off) == {"root.qcow2", "data.qcow2", "root.qcow2" + OV,
                               "data.qcow2" + OV}
        last = gd.read_serial(r.serial()).writer_stopped
        assert last, "the guest did not report its last record at the power-off"

        # 3. resumed again: the rest of the delta; nothing on the source changed
        out = await run(r.executor("a")[0], r.migrate())
        sent = out.result.disks or []
        assert r.chain() == at_off
        assert sent_sums(sent) == disk_sums(r)  # what was sent is the chain at power-off
        assert [f.role for f in sent][-2:] == [DiskRole.OVERLAY, DiskRole.OVERLAY]
        frozen = writer_records(src(r, "data.qcow2"))
        assert max(frozen, default=0) < last  # written during the copy, into the overlay

        # 4. the destination's overlay is not the powered-off source's (here: Finish is
        # told another checksum for it): Finish refuses, nothing is merged or started
        wrong = [f.model_copy(update={"checksum": "0" * 64}) if f.role is DiskRole.OVERLAY
                 and f.path.endswith("data.qcow2" + OV) else f for f in sent]
        b = r.executor("b")[0]
        with pytest.raises(StepError, match="refusing to start"):
            await run(b, r.finish(wrong))
        assert not hv.exists(r.name + "-b")
        assert r.dest("data.qcow2" + OV).exists()  # not merged either

        # 5. after the switch: a repeated MigrateDisk (operator restarted) changes nothing
        again = await run(r.executor("a")[0], r.migrate())
        assert sent_sums(again.result.disks or []) == sent_sums(sent)
        assert r.chain() == at_off
        await run(b, r.finish(sent))
        arrived = writer_records(r.dest("data.qcow2"))
        assert max(arrived) == last  # every record up to the power-off, nothing after
        assert not r.dest("data.qcow2" + OV).exists()
        await run(r.executor("b")[0], r.finish(sent))  # resumed Finish: same VM
        await r.booted("b", r.dest_dir)
        assert r.chain() == at_off  # the whole VerifyResize

        await run(r.executor("a")[0], r.confirm())
        assert r.chain() == {}
        assert not list((r.root("a") / INSTANCE_DIR).glob("*.precopy"))


def test_rollback_before_power_off_merges_live_and_revert_restarts_on_the_chain(
        guest: Guest, hv: LibvirtHypervisor) -> None:
    asyncio.run(_rollback_and_revert(guest, hv))


async def _rollback_and_revert(guest: Guest, hv: LibvirtHypervisor) -> None:
    async with rig(guest, hv, "pcr") as r:
        r.make_vm(data_mib=96)
        await r.booted()
        b = r.executor("b")[0]
        await run(b, r.prepare())
        a, _ = r.executor("a", crash=f"{r.tid}-0", after=0.1)
        with pytest.raises(Killed):
            await run(a, r.migrate())
        assert on_overlays(r)

        # rollback in the live phase: merged back while the guest keeps writing
        seen = max(writer_records(src(r, "data.qcow2" + OV)), default=0)
        await run(r.executor("a")[0], r.restore())
        assert {t: p.name for t, p in hv.disk_tops(r.name).items()} == {
            "vda": "root.qcow2", "vdb": "data.qcow2"}
        assert not src(r, "root.qcow2" + OV).exists()
        assert not src(r, "data.qcow2.precopy").exists()
        assert "vmresize-overlay" not in hv.definition(r.name)
        log = gd.read_serial(r.serial())
        assert not log.acpi_power_button  # the VM never stopped
        assert log.writer_stopped is None
        await asyncio.sleep(2)
        assert max(writer_records(src(r, "data.qcow2"))) > seen  # merged, and going on

        # a full pre-copy move, then a revert
        await run(b, r.cleanup())
        await run(b, r.prepare())
        out = await run(r.executor("a")[0], r.migrate())
        at_off = r.chain()
        requested = markers.PowerOff.parse(markers.read(src(r, "root.qcow2.poweroff")))
        assert requested is not None
        await run(b, r.finish(out.result.disks or []))
        down = time.time() - requested.requested_at
        print(f"pre-copy: MigrateDisk downtime {out.result.downtime_seconds:.2f} s, "
              f"power-off request -> destination started {down:.2f} s")
        last = gd.read_serial(r.serial()).writer_stopped or 0
        await run(b, r.cleanup())
        assert r.chain() == at_off
        await run(r.executor("a")[0], r.restore())
        assert "vmresize-overlay" not in hv.definition(r.name)
        assert not src(r, "data.qcow2" + OV).exists()
        await r.booted()
        assert max(writer_records(src(r, "data.qcow2"))) >= last  # the delta merged back
