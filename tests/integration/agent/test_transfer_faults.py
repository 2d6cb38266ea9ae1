"""Disk transfer under faults (issue 9, items 5 and 6): a destination filesystem that fills
up, space promised twice, a receiver that stops taking data. Real asyncssh on 127.0.0.1,
a real small tmpfs mounted under the test's temp dir (the tests run as root)."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from hack import children

from vmresize.agent.errors import ConnectionLostError, InsufficientSpaceError, TransferRefusedError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.transfer.client import send_disk
from vmresize.agent.transfer.server import MigrationServer
from vmresize.agent.transfer.service import QCOW2_SLACK_BYTES, SshTransfer
from vmresize.api.hosttask import HostTaskSpec, TaskAction

from .conftest import MiB, XferKeys, xfer_start

pytestmark = pytest.mark.asyncio(loop_scope="session")

MakeFile = Callable[[str, int, dict[int, int]], Path]
DISK = "instances/ns/vm/0f0f0f0f/disk.qcow2"
BOUND = 30.0  # before the fix these waits never ended; a generous bound on a loaded box


@pytest.fixture
def small_fs(xfer_root: Path) -> Iterator[Path]:
    """``<root>/instances`` is an 8 MiB tmpfs: where the disk lands is a filesystem of its
    own, nearly full while the storage root itself has room."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = xfer_root / "instances"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    unmount = children.on_stop(f"tmpfs {mnt}", lambda: subprocess.run(
        ["umount", "-l", str(mnt)], check=False))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        children.done(unmount)


@pytest_asyncio.fixture(loop_scope="session")
async def small_server(xfer_root: Path, xfer_keys: XferKeys, small_fs: Path
                       ) -> AsyncIterator[MigrationServer]:
    server = await xfer_start(xfer_root, xfer_keys)
    try:
        yield server
    finally:
        await server.close()


async def test_a_full_destination_ends_the_send_with_its_reason(
        small_server: MigrationServer, xfer_keys: XferKeys, xfer_file: MakeFile) -> None:
    # 64 MiB disk, 24 MiB of data, into 8 MiB: the receiver runs out of space mid-way.
    src = xfer_file("big.img", 64 * MiB, {i * 8 * MiB: 3 * MiB for i in range(8)})
    small_server.expect("t-full", DISK, 64 * MiB)
    with pytest.raises(TransferRefusedError) as err:
        await asyncio.wait_for(send_disk(
            src=src, address="127.0.0.1", port=small_server.port, host_key=xfer_keys.host_pub,
            client_key=xfer_keys.client, transfer_id="t-full"), BOUND)
    assert "No space left on device" in str(err.value)
    assert "ENOSPC" in str(err.value)
    assert not err.value.retryable  # a retry would only fill the disk again


async def test_prepare_checks_the_filesystem_the_disk_lands_on_and_what_is_promised(
        small_server: MigrationServer, xfer_keys: XferKeys, xfer_root: Path) -> None:
    hv = LibvirtHypervisor("test:///default")

    async def allow(spec: HostTaskSpec, name: str) -> str | None:
        return None

    ex = Executor(host="b", hypervisor=hv, storage_root=xfer_root, fence=allow,
                  transfer=SshTransfer(small_server, xfer_keys.client))

    def prepare(tid: str, rel: str, size: int) -> HostTaskSpec:
        return HostTaskSpec(host="b", action=TaskAction.PREPARE, owner="ns/r",
                            instance="ns/vm", disk_path=rel, transfer_id=tid,
                            expected_bytes=size)
    try:
        # The storage root has room; the instance directory's filesystem (8 MiB) has not.
        with pytest.raises(InsufficientSpaceError, match=r"where .* lands"):
            await ex.run(prepare("t-a", DISK, 16 * MiB))
        assert small_server.status("t-a") is None
        # A small tmpfs with the qcow2 slack the service adds cannot promise anything:
        # the same filesystem never takes two transfers whose bounds together exceed it.
        small_server.expect("t-b", "instances/ns/vm/1/disk.qcow2", 6 * MiB)
        with pytest.raises(InsufficientSpaceError, match="promised"):
            await ex.run(prepare("t-c", "instances/ns/vm/2/disk.qcow2", 4 * MiB))
        assert 8 * MiB < QCOW2_SLACK_BYTES  # why the service-side bound is not used here
    finally:
        hv.close()


class FreezingRelay:
    """A TCP relay that stops forwarding to the receiver after ``after`` bytes but keeps both
    sockets open: a frozen (SIGSTOPped) receiver as the sender's kernel sees it."""

    def __init__(self, upstream_port: int, after: int) -> None:
        self.upstream_port, self.after = upstream_port, after
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.frozen = asyncio.Event()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [cw, uw]

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, limit: int | None
                       ) -> None:
            moved = 0
            while data := await r.read(64 * 1024):
                if limit is not None and moved + len(data) > limit:
                    self.frozen.set()
                    await asyncio.sleep(3600)  # frozen: nothing read, nothing forwarded
                moved += len(data)
                w.write(data)
                await w.drain()

        await asyncio.gather(pump(cr, uw, self.after), pump(ur, cw, None),
                             return_exceptions=True)

    async def close(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()


async def test_a_receiver_that_stops_taking_data_ends_the_send(
        xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_file: MakeFile) -> None:
    src = xfer_file("dense.img", 64 * MiB, {0: 64 * MiB})
    xfer_server.expect("t-frozen", DISK, 64 * MiB)
    relay = FreezingRelay(xfer_server.port, after=4 * MiB)
    port = await relay.start()
    try:
        with pytest.raises(ConnectionLostError, match=r"took no data|no answer") as err:
            await asyncio.wait_for(send_disk(
                src=src, address="127.0.0.1", port=port, host_key=xfer_keys.host_pub,
                client_key=xfer_keys.client, transfer_id="t-frozen", reconnect_attempts=1,
                stall_timeout=2.0), BOUND)
        assert err.value.retryable  # the step may resume once the receiver is back
    finally:
        await relay.close()


async def test_a_cancelled_send_leaves_no_unretrieved_task_error(
        xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_file: MakeFile) -> None:
    # A superseded MigrateDisk cancels its send while the sender waits for the channel to
    # drain; the connection then closes under that drain (BrokenPipeError), which used to
    # be logged as "Task exception was never retrieved".
    src = xfer_file("cancelled.img", 64 * MiB, {0: 64 * MiB})
    xfer_server.expect("t-cancel", DISK, 64 * MiB)
    relay = FreezingRelay(xfer_server.port, after=4 * MiB)
    port = await relay.start()
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, ctx: seen.append(ctx))
    try:
        task = asyncio.create_task(send_disk(
            src=src, address="127.0.0.1", port=port, host_key=xfer_keys.host_pub,
            client_key=xfer_keys.client, transfer_id="t-cancel"))
        await asyncio.wait_for(relay.frozen.wait(), BOUND)
        await asyncio.sleep(1.0)  # the sender fills the window, then sits in its drain
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await relay.close()
        for _ in range(3):  # let the torn-down channel fail what waited on it, then collect
            await asyncio.sleep(0.2)
            gc.collect()
    finally:
        loop.set_exception_handler(handler)
        await relay.close()
    assert [f"{c.get('message')}: {c.get('exception')!r}" for c in seen] == []
