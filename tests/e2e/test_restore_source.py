"""RestoreSource on real QEMU (issue 18, findings 1 and 2).

The in-process rig of :mod:`tests.support.precopy_rig`: real executors, real asyncssh on
127.0.0.1, one embedded libvirt, the booting test guest with its writer on ``vdb``.

* A guest slow to answer ACPI (``vmresize.acpi_delay_s``): MigrateDisk asks it to shut
  down and is cancelled while it still runs (the resize rolls back). RestoreSource must
  let that shutdown end, start the VM again and report Running only then: long after
  the step, the VM still runs and has booted a second time.
* A merge-back on a full source filesystem (a tmpfs that the test fills once the guest's
  writes go only to a cluster its overlay has and the disk below has not; the guest's
  writer starts late and writes a ring of one cluster): the live commit of ``vdb`` fails.
  The overlay the guest writes to and the pre-copy record stay, RestoreSource fails
  (retryable) and says so, the VM keeps running and writing; once space is back, the
  next attempt merges, and every record written meanwhile is on the disk below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack import guest_domain as gd
from hack import guest_init
from hack.guest import Guest
from tests.support.precopy_rig import (
    BOOT,
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
from vmresize.api.vmdisks import OVERLAY_SUFFIX

ACPI_DELAY = 20  # seconds the guest waits after the power button before it shuts down
RING = 64  # writer records: 32 KiB, inside one qcow2 cluster
WRITER_START = 40  # seconds from the writer's start to its first record


@pytest.fixture(scope="module")
def hv(embedded_root: Path) -> Iterator[LibvirtHypervisor]:
    h = hypervisor(embedded_root)
    yield h
    h.close()


def domain_id(hv: LibvirtHypervisor, name: str) -> int:
    """libvirt's ID of the running domain: a new one at every start."""
    return int(hv._dom(name).ID())


def test_a_shutdown_under_way_is_finished_before_the_source_restarts(
        guest: Guest, hv: LibvirtHypervisor) -> None:
    asyncio.run(_slow_shutdown(guest, hv))


async def _slow_shutdown(guest: Guest, hv: LibvirtHypervisor) -> None:
    async with rig(guest, hv, "rss") as r:
        r.make_vm(data_mib=8, acpi_delay_s=str(ACPI_DELAY))
        await r.booted()
        await run(r.executor("b")[0], r.prepare(pre_copy=False))
        step = asyncio.ensure_future(run(r.executor("a")[0], r.migrate(pre_copy=False)))
        await asyncio.to_thread(gd.wait_serial, r.serial(), lambda g: g.acpi_power_button,
                                timeout=BOOT, what="the power button")
        pressed = time.monotonic()
        step.cancel()  # the watchdog rolled the resize back: the step is superseded
        with contextlib.suppress(asyncio.CancelledError):
            await step
        assert hv.state(r.name) == PowerState.RUNNING  # shutting down, libvirt cannot tell
        qemu = domain_id(hv, r.name)

        out = await run(r.executor("a")[0], r.restore())
        assert out.result.power_state == PowerState.RUNNING.value
        print(f"RestoreSource {time.monotonic() - pressed:.1f} s after the power button: "
              f"{out.message}")
        restarted = domain_id(hv, r.name)
        # Well past the moment the guest would have stopped: it runs, the same start.
        await asyncio.sleep(max(0.0, ACPI_DELAY + 10 - (time.monotonic() - pressed)))
        assert hv.state(r.name) == PowerState.RUNNING
        assert domain_id(hv, r.name) == restarted
        # The guest ended the shutdown it had begun (within its grace), then started anew.
        assert restarted != qemu
        assert out.message.startswith("finished the power-off the move had begun (Graceful)")
        await r.booted()
        assert not (r.root("a") / (r.files[0].path + ".poweroff")).exists()


def test_a_merge_back_on_a_full_filesystem_keeps_the_overlay_and_its_record(
        guest: Guest, hv: LibvirtHypervisor) -> None:
    asyncio.run(_merge_back_full(guest, hv))


def _fill(directory: Path) -> int:
    """Fill the filesystem of ``directory``; the bytes written."""
    n = 0
    with contextlib.suppress(OSError), (directory / "filler").open("wb") as f:
        while True:
            f.write(b"\xff" * (1 << 16))
            f.flush()
            n += 1 << 16
    return n


async def _merge_back_full(guest: Guest, hv: LibvirtHypervisor) -> None:
    async with rig(guest, hv, "rsf") as r:
        d = r.root("a") / INSTANCE_DIR
        d.mkdir(parents=True)
        await asyncio.to_thread(subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=48m",
                                                 "tmpfs", str(d)], check=True)
        try:
            await _full(r, d, hv)
        finally:
            with contextlib.suppress(Exception):
                hv.destroy(r.name)
            await asyncio.to_thread(subprocess.run, ["umount", "-l", str(d)], check=False,
                                    capture_output=True)


def ring_in(path: Path) -> bool:
    """Whether ``path`` itself (not a file below it) holds data where the ring is."""
    out = subprocess.run(["qemu-img", "map", "--output=json", "-U", "-f", "qcow2",
                          str(path)], check=True, capture_output=True, text=True, timeout=60)
    at = guest_init.WRITER_OFFSET
    return any(e["data"] and e.get("depth", 0) == 0 and e["start"] <= at < e["start"]
               + e["length"] for e in json.loads(out.stdout))


async def _full(r: Rig, d: Path, hv: LibvirtHypervisor) -> None:
    # The writer's first record comes WRITER_START s after boot: after the overlays.
    # Clusters of 2 MiB below the overlay: the commit needs more than RestoreSource
    # frees when it deletes the root disk's overlay (empty, merged first, ~200 KiB).
    r.make_vm(data_mib=8, data_cluster="2M", writer_slots=str(RING),
              writer_start_s=str(WRITER_START))
    await r.booted()
    await run(r.executor("b")[0], r.prepare())
    a, _ = r.executor("a", crash=f"{r.tid}-0", after=0.1)
    with pytest.raises(Killed):  # the live copy cut short: the VM runs on its overlays
        await run(a, r.migrate())
    overlay, record = d / ("data.qcow2" + OVERLAY_SUFFIX), d / "root.qcow2.precopy"
    assert hv.disk_tops(r.name)["vdb"] == overlay
    # qcow2 allocates a whole cluster at the first write into it: once the guest wrote a
    # record on the overlay, the ring's cluster is there and its writes need no new one,
    # while the disk below has none there: the commit must allocate it.
    await asyncio.to_thread(gd.wait_serial, r.serial(), lambda g: max(
        writer_records(overlay), default=0) > 2, timeout=BOOT, what="writes on the overlay")
    assert ring_in(overlay)
    assert not ring_in(d / "data.qcow2"), "the guest wrote its ring before the overlay"
    filled = await asyncio.to_thread(_fill, d)
    print(f"source filesystem filled ({filled >> 20} MiB)")

    with pytest.raises(StepError, match="could not be merged back") as err:
        await run(r.executor("a")[0], r.restore())
    print(f"RestoreSource failed: {err.value}")
    assert err.value.retryable
    assert "vdb still on data.qcow2" + OVERLAY_SUFFIX in str(err.value)
    assert overlay.exists()
    assert record.exists()
    assert hv.disk_tops(r.name)["vdb"] == overlay
    assert hv.state(r.name) == PowerState.RUNNING
    seen = max(writer_records(overlay))
    await asyncio.sleep(2)
    assert max(writer_records(overlay)) > seen  # the guest writes on, into the overlay

    (d / "filler").unlink()  # space is back: the retry merges
    await run(r.executor("a")[0], r.restore())
    assert {t: p.name for t, p in hv.disk_tops(r.name).items()} == {
        "vda": "root.qcow2", "vdb": "data.qcow2"}
    assert not overlay.exists()
    assert not record.exists()
    last = max(writer_records(d / "data.qcow2"))
    assert last > seen  # nothing the guest wrote on the overlay was lost
    await asyncio.sleep(2)
    assert max(writer_records(d / "data.qcow2")) > last  # and it writes on, there
