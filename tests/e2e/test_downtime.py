"""Downtime on real QEMU (issue 19 finding 8): a guest without an OS ignores the ACPI
power-off request and runs through the whole grace period; the agent forces it off. The
downtime counts from that moment, the grace period is reported apart.

One embedded libvirt in this process, the real asyncssh transfer on 127.0.0.1
(:mod:`tests.support.precopy_rig`); the VM boots no kernel, only the firmware, which
finds nothing to boot on a disk of random bytes and waits: nothing answers ACPI.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hack.guest import Guest
from tests.support.precopy_rig import hypervisor, rig, run

from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.api.hosttask import PowerOff

GRACE = 3


@pytest.fixture(scope="module")
def hv(embedded_root: Path) -> Iterator[LibvirtHypervisor]:
    h = hypervisor(embedded_root)
    yield h
    h.close()


def test_a_guest_without_an_os_is_forced_off_and_its_grace_is_not_downtime(
        guest: Guest, hv: LibvirtHypervisor) -> None:
    asyncio.run(_forced(guest, hv))


async def _forced(guest: Guest, hv: LibvirtHypervisor) -> None:
    async with rig(guest, hv, "pdt") as r:
        r.make_vm(data_mib=1)
        hv.destroy(r.name)  # the same VM without a kernel to boot: only the firmware runs
        hv.define_xml(re.sub(r"<kernel>.*</cmdline>", "", hv.export(r.name), flags=re.S))
        hv.start(r.name)
        assert hv.state(r.name) == PowerState.RUNNING
        await run(r.executor("b")[0], r.prepare(pre_copy=False))
        migrate = r.migrate(pre_copy=False).model_copy(
            update={"power_off_timeout_seconds": GRACE})
        out = (await run(r.executor("a")[0], migrate)).result
        ended = datetime.now(UTC)
        assert out.power_off is PowerOff.FORCED
        assert out.downtime_seconds is not None
        assert out.downtime_seconds < GRACE   # a 1 MiB copy; it ran through the grace
        assert out.powered_off_at is not None
        assert out.stopped_at is not None
        assert out.power_off_wait_seconds is not None
        assert out.power_off_wait_seconds >= GRACE
        assert out.stopped_at - out.powered_off_at >= timedelta(seconds=GRACE)
        assert out.downtime_seconds <= (ended - out.stopped_at).total_seconds() + 0.001
        # before the fix the downtime was the grace plus the copy: now only the copy
        assert out.downtime_seconds + out.power_off_wait_seconds == pytest.approx(
            (ended - out.powered_off_at).total_seconds(), abs=0.5)
        assert not hv.exists(r.name)  # off and held
