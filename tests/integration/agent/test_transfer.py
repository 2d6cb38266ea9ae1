"""Disk transfer end to end: real asyncssh server and client on 127.0.0.1, no mocks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from tests.support.checksum import reference_disk_checksum

from vmresize.agent.errors import (
    AuthRejectedError,
    ConnectionLostError,
    HostKeyError,
    PathEscapeError,
    TransferRefusedError,
)
from vmresize.agent.transfer.client import SendResult, send_disk
from vmresize.agent.transfer.server import SUBSYSTEM, MigrationServer
from vmresize.agent.transfer.sparse import disk_checksum

from .conftest import MiB, XferCutProxy, XferKeys, xfer_start

pytestmark = pytest.mark.asyncio(loop_scope="session")

MakeFile = Callable[[str, int, dict[int, int]], Path]
GiB = 1024 * MiB
DISK = "instances/ns/vm/abcd1234/disk.qcow2"


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.partial") if p.is_file()]


async def send(server: MigrationServer, keys: XferKeys, src: Path, *, port: int | None = None,
               host_key: str | None = None, client_key: asyncssh.SSHKey | None = None,
               transfer_id: str = "t-1", **kw: Any) -> SendResult:
    return await send_disk(src=src, address="127.0.0.1", port=port or server.port,
                           host_key=host_key or keys.host_pub,
                           client_key=client_key or keys.client, transfer_id=transfer_id,
                           **kw)


async def test_sparse_gib_sends_only_its_data(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                               xfer_root: Path, xfer_file: MakeFile) -> None:
    # 64 MiB of data in 16 runs of 4 MiB spread over 1 GiB; the rest is holes.
    src = xfer_file("sparse.img", GiB, {i * 64 * MiB + 4096: 4 * MiB for i in range(16)})
    xfer_server.expect("t-1", DISK, GiB)
    reports: list[tuple[int, int, float]] = []
    result = await send(xfer_server, xfer_keys, src,
                        progress=lambda d, t, r: reports.append((d, t, r)))
    dest = xfer_root / DISK
    assert result.checksum == disk_checksum(src) == disk_checksum(dest)
    assert dest.stat().st_size == src.stat().st_size == GiB == result.size_bytes
    assert 64 * MiB <= result.bytes_sent <= 64 * MiB + 16 * 8192  # block-rounded extents
    assert dest.stat().st_blocks * 512 < 80 * MiB  # the destination is sparse too
    assert not (xfer_root / (DISK + ".partial")).exists()
    status = xfer_server.status("t-1")
    assert status is not None
    assert status.complete
    assert status.checksum == result.checksum
    assert reports
    assert reports[-1][0] == reports[-1][1] == result.bytes_sent


async def test_dense_unaligned_file_round_trips(xfer_server: MigrationServer,
                                                xfer_keys: XferKeys, xfer_root: Path,
                                                xfer_file: MakeFile) -> None:
    size = 6 * MiB + 123
    src = xfer_file("dense.img", size, {0: size})
    xfer_server.expect("t-1", DISK, size)
    result = await send(xfer_server, xfer_keys, src)
    dest = xfer_root / DISK
    assert dest.read_bytes() == src.read_bytes()
    assert result.checksum == reference_disk_checksum(src.read_bytes())
    assert result.bytes_sent == size
    assert result.legs == (size,)
    # Sending again is idempotent: the receiver reports the verified copy, nothing moves.
    again = await send(xfer_server, xfer_keys, src)
    assert again.checksum == result.checksum
    assert again.bytes_sent == 0


@pytest.mark.parametrize("size", [0, 5 * MiB])  # empty, and all holes
async def test_empty_and_all_hole_disks(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                        xfer_root: Path, xfer_file: MakeFile,
                                        size: int) -> None:
    src = xfer_file("empty.img", size, {})
    xfer_server.expect("t-1", DISK, size)
    result = await send(xfer_server, xfer_keys, src)
    dest = xfer_root / DISK
    assert result.bytes_sent == 0
    assert dest.stat().st_size == size
    assert result.checksum == reference_disk_checksum(bytes(size)) == disk_checksum(dest)


async def test_allocated_zeros_are_not_sent(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                            xfer_root: Path, tmp_path: Path) -> None:
    # Allocated zeros (e.g. a preallocated image) travel as holes, like real holes.
    src = tmp_path / "prealloc.img"
    payload = os.urandom(MiB)
    src.write_bytes(bytes(8 * MiB) + payload)
    xfer_server.expect("t-1", DISK, 9 * MiB)
    result = await send(xfer_server, xfer_keys, src)
    assert result.bytes_sent == MiB
    dest = xfer_root / DISK
    assert result.checksum == disk_checksum(src) == disk_checksum(dest)
    assert dest.stat().st_blocks * 512 < 4 * MiB


async def test_unknown_client_key_is_refused(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                             xfer_root: Path, xfer_file: MakeFile) -> None:
    src = xfer_file("a.img", MiB, {0: MiB})
    xfer_server.expect("t-1", DISK, MiB)
    with pytest.raises(AuthRejectedError) as err:
        await send(xfer_server, xfer_keys, src, client_key=xfer_keys.stranger)
    assert not err.value.retryable
    assert isinstance(err.value.__cause__, asyncssh.PermissionDenied)
    assert not (xfer_root / DISK).exists()
    status = xfer_server.status("t-1")
    assert status is not None
    assert status.received == 0


async def test_wrong_pinned_host_key_aborts(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                            xfer_file: MakeFile) -> None:
    src = xfer_file("a.img", MiB, {0: MiB})
    xfer_server.expect("t-1", DISK, MiB)
    impostor = xfer_keys.stranger.export_public_key("openssh").decode()
    with pytest.raises(HostKeyError) as err:
        await send(xfer_server, xfer_keys, src, host_key=impostor)
    assert not err.value.retryable
    with pytest.raises(HostKeyError):
        await send(xfer_server, xfer_keys, src, host_key="not a key")
    status = xfer_server.status("t-1")
    assert status is not None
    assert status.received == 0


async def test_unregistered_transfer_is_refused(xfer_server: MigrationServer,
                                                xfer_keys: XferKeys, xfer_root: Path,
                                                xfer_file: MakeFile) -> None:
    src = xfer_file("a.img", MiB, {0: MiB})
    with pytest.raises(TransferRefusedError, match="unknown transfer"):
        await send(xfer_server, xfer_keys, src, transfer_id="never-expected")
    xfer_server.expect("t-1", DISK, 2 * MiB)  # registered, but with another size
    with pytest.raises(TransferRefusedError, match="size"):
        await send(xfer_server, xfer_keys, src)
    assert not partial_files(xfer_root)


async def test_size_bound_is_fixed_by_the_first_hello(xfer_server: MigrationServer,
                                                       xfer_keys: XferKeys, xfer_root: Path,
                                                       xfer_file: MakeFile) -> None:
    # Prepare knows only an upper bound (the qcow2 may still grow before power-off).
    xfer_server.expect("t-1", DISK, 8 * MiB, at_most=True)
    xfer_server.expect("t-1", DISK, 8 * MiB, at_most=True)  # idempotent
    with pytest.raises(TransferRefusedError, match="exceeds"):
        await send(xfer_server, xfer_keys, xfer_file("big.img", 9 * MiB, {0: MiB}))
    src = xfer_file("ok.img", 3 * MiB + 1, {0: MiB})
    result = await send(xfer_server, xfer_keys, src)
    assert result.checksum == disk_checksum(src) == disk_checksum(xfer_root / DISK)
    status = xfer_server.status("t-1")
    assert status is not None
    assert status.size == 3 * MiB + 1
    assert status.complete


async def test_path_escapes_are_refused(xfer_server: MigrationServer, xfer_root: Path,
                                        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (xfer_root / "instances").mkdir()
    (xfer_root / "instances" / "evil").symlink_to(outside)
    for rel in ("../outside/disk", "/etc/vmresize-disk", "instances/evil/disk",
                "instances/../../outside/disk", "a/\x00/disk"):
        with pytest.raises(PathEscapeError):
            xfer_server.expect("t-esc", rel, MiB)
        assert xfer_server.status("t-esc") is None
    # A symlink planted where the partial file will be is not followed either.
    xfer_server.expect("t-2", "instances/ok/disk", MiB)
    assert list(outside.iterdir()) == []


async def test_partial_symlink_is_not_followed(xfer_server: MigrationServer,
                                               xfer_keys: XferKeys, xfer_root: Path,
                                               xfer_file: MakeFile, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    xfer_server.expect("t-1", DISK, MiB)
    (xfer_root / (DISK + ".partial")).symlink_to(victim)
    with pytest.raises(TransferRefusedError):
        await send(xfer_server, xfer_keys, xfer_file("a.img", MiB, {0: MiB}))
    assert victim.read_bytes() == b"precious"


async def test_service_offers_nothing_but_the_disk_subsystem(
        xfer_server: MigrationServer, xfer_keys: XferKeys) -> None:
    known = asyncssh.import_known_hosts(f"[127.0.0.1]:{xfer_server.port} {xfer_keys.host_pub}\n")
    async with asyncssh.connect("127.0.0.1", xfer_server.port, known_hosts=known,
                                client_keys=[xfer_keys.client], username="probe", config=[],
                                agent_path=None) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("id")                              # exec
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process()                       # shell
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.start_sftp_client()                    # sftp
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(subsystem="foo")        # any other subsystem
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(subsystem=SUBSYSTEM, term_type="xterm")  # pty
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", xfer_server.port)  # local forwarding
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 9)  # remote fwd


async def test_resume_after_cut_connection(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                           xfer_root: Path, xfer_file: MakeFile) -> None:
    size = 24 * MiB
    src = xfer_file("dense.img", size, {0: size})
    xfer_server.expect("t-1", DISK, size)
    proxy = XferCutProxy(xfer_server.port, cuts=[10 * MiB])
    port = await proxy.start()
    try:
        result = await send(xfer_server, xfer_keys, src, port=port, reconnect_attempts=3)
    finally:
        await proxy.close()
    assert proxy.connections == 2
    assert len(result.legs) == 2
    assert 0 < result.legs[1] < size
    assert result.checksum == disk_checksum(src) == disk_checksum(xfer_root / DISK)


async def test_resume_after_receiver_restart(xfer_root: Path, xfer_keys: XferKeys,
                                             xfer_file: MakeFile) -> None:
    size = 24 * MiB
    src = xfer_file("dense.img", size, {0: size // 2, size - MiB: MiB})
    first = await xfer_start(xfer_root, xfer_keys)
    first.expect("t-1", DISK, size)
    proxy = XferCutProxy(first.port, cuts=[8 * MiB])
    port = await proxy.start()
    try:
        with pytest.raises(ConnectionLostError) as err:
            await send(first, xfer_keys, src, port=port, reconnect_attempts=0)
        assert err.value.retryable
    finally:
        await proxy.close()
        await first.close()
    # A new server process on the same root finds the sidecar and the partial file.
    second = await xfer_start(xfer_root, xfer_keys)
    try:
        status = second.status("t-1")
        assert status is not None
        assert 0 < status.received < size
        assert not status.complete
        second.expect("t-1", DISK, size)  # the Prepare step re-running is harmless
        result = await send(second, xfer_keys, src)
        assert result.bytes_sent + status.received == size // 2 + MiB
        assert result.checksum == disk_checksum(src) == disk_checksum(xfer_root / DISK)
    finally:
        await second.close()


async def test_receiver_restarted_mid_send_resumes(xfer_root: Path, xfer_keys: XferKeys,
                                                    xfer_file: MakeFile) -> None:
    """One send_disk call survives the receiver being stopped and started again."""
    size = 24 * MiB
    src = xfer_file("dense.img", size, {0: size})
    servers = [await xfer_start(xfer_root, xfer_keys)]
    servers[0].expect("t-1", DISK, size)

    async def restart() -> None:  # like a kill of the agent, its Pod coming back
        await servers[-1].close()
        servers.append(await xfer_start(xfer_root, xfer_keys))  # recovers the sidecar
        proxy.upstream_port = servers[-1].port

    proxy = XferCutProxy(servers[0].port, cuts=[12 * MiB], on_cut=restart)
    port = await proxy.start()
    try:
        result = await send(servers[0], xfer_keys, src, port=port, reconnect_attempts=3)
        assert len(servers) == 2
        assert len(result.legs) == 2
        assert 0 < result.legs[1] < size
        assert result.checksum == disk_checksum(src) == disk_checksum(xfer_root / DISK)
        status = servers[1].status("t-1")
        assert status is not None
        assert status.complete
    finally:
        await proxy.close()
        for server in servers:
            await server.close()


async def test_corrupted_partial_is_caught_and_resent(xfer_server: MigrationServer,
                                                      xfer_keys: XferKeys, xfer_root: Path,
                                                      xfer_file: MakeFile) -> None:
    size = 16 * MiB
    src = xfer_file("dense.img", size, {0: size})
    xfer_server.expect("t-1", DISK, size)
    proxy = XferCutProxy(xfer_server.port, cuts=[8 * MiB])
    port = await proxy.start()
    try:
        with pytest.raises(ConnectionLostError):
            await send(xfer_server, xfer_keys, src, port=port, reconnect_attempts=0)
    finally:
        await proxy.close()
    partial = xfer_root / (DISK + ".partial")
    fd = os.open(partial, os.O_WRONLY)
    os.pwrite(fd, b"\xff" * 16, 0)  # bit rot inside an acknowledged range
    os.close(fd)
    result = await send(xfer_server, xfer_keys, src)
    # First leg: the rest, then the receiver's checksum differs, it resets, all is resent.
    assert len(result.legs) == 2
    assert result.legs[1] == size
    assert result.checksum == disk_checksum(src) == disk_checksum(xfer_root / DISK)
