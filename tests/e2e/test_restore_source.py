"""RestoreSource on real QEMU (issue 18, findings 1 and 2).

The in-process rig of :mod:`tests.support.precopy_rig`: real executors, real asyncssh on
127.0.0.1, one embedded libvirt, the booting test guest with its writer on ``vdb``.

* A guest slow to answer ACPI (``vmresize.acpi_delay_s``): MigrateDisk asks it to shut
  down and is cancelled while it still runs (the resize rolls back). RestoreSource must
  let that shutdown end, start the VM again and report Running only then: long after
  the step, the VM still runs and has booted a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack import guest_domain as gd
from hack.guest import Guest
from tests.support.precopy_rig import (
    BOOT,
    hypervisor,
    rig,
    run,
)

from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import PowerState

ACPI_DELAY = 20  # seconds the guest waits after the power button before it shuts down


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
