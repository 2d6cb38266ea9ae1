"""A step never hangs on a libvirt call or a checksum that makes no progress (issue 18, 7b).

A heartbeat proves the agent's loop is alive, not that a step moves. These tests hang a
libvirt call for real (a hypervisor around ``test:///default`` whose definition read
blocks until released) and a checksum for real (a FIFO nobody writes: the open itself
blocks), and check that the step ends, retryable, with a reason that names what hung,
and that the VM was not touched. Without the deadlines each would wait for the release.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.agent.test_executor_wholevm import PEER, setup, spec  # noqa: F401 - fixture

from vmresize.agent.errors import ChecksumStalledError, StepError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.steps.table import STEPS
from vmresize.agent.vmfiles import moving
from vmresize.api import vmdisks
from vmresize.api.hosttask import TaskAction

A = TaskAction
HUNG_FOR = 30.0
"""How long a hung call waits for its release: far beyond every deadline below."""


class StuckExport:
    """``test:///default``, except that reading a domain's definition for a move hangs
    (as a wedged QEMU monitor or storage pool makes libvirt hang) until released."""

    def __init__(self, hv: LibvirtHypervisor) -> None:
        self._hv = hv
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._hv, name)

    def export(self, name: str) -> str:
        self.release.wait(HUNG_FOR)
        return self._hv.export(name)


@pytest.fixture
def stuck(setup: tuple[Executor, Executor, str]  # noqa: F811 - the imported fixture
          ) -> Iterator[tuple[Executor, Executor, str, StuckExport]]:
    a, b, name = setup
    hung = StuckExport(a.hv)  # type: ignore[arg-type]
    ex = Executor(host="a", hypervisor=hung, storage_root=a.root,  # type: ignore[arg-type]
                  transfer=a.transfer, fence=a.fence, call_timeout=0.5)
    try:
        yield ex, b, name, hung
    finally:
        hung.release.set()


async def test_a_hung_capture_before_the_power_off_ends_migratedisk(
        stuck: tuple[Executor, Executor, str, StuckExport]) -> None:
    a, b, name, hung = stuck
    hung.release.set()  # Adopt lists the files first
    files = (await a.run(spec("a", A.ADOPT, domain_name=name))).result.disks or []
    hung.release.clear()
    wanted = vmdisks.destination(files, "instances/ns/web-1/t1", "t1")
    await b.run(spec("b", A.PREPARE, disks=vmdisks.arrived(wanted), transfer_id="t1"))
    with pytest.raises(StepError, match="libvirt export did not answer within") as err:
        await asyncio.wait_for(a.run(spec(
            "a", A.MIGRATE_DISK, domain_name=name, disk_path=files[0].path, peer=PEER,
            transfer_id="t1", disks=wanted, power_off_timeout_seconds=0)), timeout=10)
    assert err.value.retryable
    assert a.hv.state(name) is PowerState.RUNNING   # refused before the power-off
    hung.release.set()  # the abandoned thread's read returns before the loop closes


async def test_a_hung_capture_ends_adopt(
        stuck: tuple[Executor, Executor, str, StuckExport]) -> None:
    a, _, name, hung = stuck
    with pytest.raises(StepError, match="libvirt export did not answer within") as err:
        await asyncio.wait_for(a.run(spec("a", A.ADOPT, domain_name=name)), timeout=10)
    assert err.value.retryable
    hung.release.set()  # the abandoned thread's read returns before the loop closes


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    os.mkfifo(path)
    return path


async def test_a_checksum_that_reads_nothing_ends(fifo: Path) -> None:
    try:
        with pytest.raises(ChecksumStalledError, match=r"read nothing for 0\.3 s") as err:
            await asyncio.wait_for(moving.file_checksum(fifo, stall=0.3), timeout=10)
        assert err.value.retryable
    finally:  # the reading thread's open returns once a writer opens; it then ends
        os.close(os.open(fifo, os.O_WRONLY))


async def test_a_checksum_that_reads_slowly_but_steadily_completes(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(3 << 20))
    expected = moving.disk_checksum(path)
    assert await moving.file_checksum(path, stall=5) == expected


def test_every_action_has_its_step() -> None:
    assert set(STEPS) == set(TaskAction)
