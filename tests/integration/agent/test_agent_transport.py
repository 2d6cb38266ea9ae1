"""The executor's SSH transfer adapter over a real asyncssh server and client (127.0.0.2).

Prepare only knows an upper bound of the size that will arrive (the operator sends the
flavor's disk size); the adapter registers it with ``at_most`` and qcow2 metadata slack.
These tests check that bound, and that a prepared transfer survives an agent restart.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio
from tests.support.checksum import file_disk_checksum

from vmresize.agent.errors import TransferError
from vmresize.agent.transfer.keys import generate_key, load_or_create_host_key, public_openssh
from vmresize.agent.transfer.server import MigrationServer, start_migration_server
from vmresize.agent.transfer.service import SshTransfer
from vmresize.api.hosttask import PeerHost

MiB = 1024 * 1024
ADDRESS = "127.0.0.2"


async def agent_serve(root: Path, host_key: asyncssh.SSHKey,
                      client_key: asyncssh.SSHKey) -> tuple[MigrationServer, SshTransfer]:
    server = await start_migration_server(root=root, host_key=host_key,
                                          authorized_keys=[public_openssh(client_key)],
                                          host=ADDRESS)
    return server, SshTransfer(server, client_key)


@pytest_asyncio.fixture(loop_scope="session")
async def agent_receiver(tmp_path: Path) -> AsyncIterator[tuple[SshTransfer, PeerHost, Path]]:
    root = tmp_path / "dst"
    root.mkdir()
    host_key = load_or_create_host_key(tmp_path / "state")
    server, transfer = await agent_serve(root, host_key, generate_key())
    peer = PeerHost(name="dst", address=ADDRESS, port=server.port,
                    host_key=public_openssh(host_key))
    try:
        yield transfer, peer, root
    finally:
        await server.close()


def make_disk(path: Path, size: int) -> str:
    with path.open("wb") as f:
        f.truncate(size)
        f.seek(MiB)
        f.write(os.urandom(64 * 1024))
    return file_disk_checksum(path)


@pytest.mark.asyncio(loop_scope="session")
async def test_sends_within_the_prepared_bound(
        agent_receiver: tuple[SshTransfer, PeerHost, Path], tmp_path: Path) -> None:
    transfer, peer, root = agent_receiver
    src = tmp_path / "src.qcow2"
    sha = make_disk(src, 4 * MiB)
    transfer.expect("t1", "instances/ns/vm/1/disk.qcow2", 8 * MiB)
    transfer.expect("t1", "instances/ns/vm/1/disk.qcow2", 8 * MiB)  # idempotent
    assert transfer.received("t1") is not None
    sent = await transfer.send(src=src, peer=peer, transfer_id="t1", progress=None)
    assert sent.checksum == sha
    got = transfer.received("t1")
    assert got is not None
    assert got.complete
    assert file_disk_checksum(root / "instances/ns/vm/1/disk.qcow2") == sha


@pytest.mark.asyncio(loop_scope="session")
async def test_refuses_a_disk_larger_than_prepared(
        agent_receiver: tuple[SshTransfer, PeerHost, Path], tmp_path: Path) -> None:
    transfer, peer, root = agent_receiver
    src = tmp_path / "big.qcow2"
    make_disk(src, 80 * MiB)  # more than 1 MiB + the 64 MiB metadata slack
    transfer.expect("t2", "instances/ns/vm/2/disk.qcow2", 1 * MiB)
    with pytest.raises(TransferError) as err:
        await transfer.send(src=src, peer=peer, transfer_id="t2", progress=None)
    assert not err.value.retryable
    assert not (root / "instances/ns/vm/2/disk.qcow2").exists()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_prepared_transfer_survives_an_agent_restart(tmp_path: Path) -> None:
    root = tmp_path / "dst"
    root.mkdir()
    host_key, client_key = load_or_create_host_key(tmp_path / "state"), generate_key()
    server, transfer = await agent_serve(root, host_key, client_key)
    transfer.expect("t3", "instances/ns/vm/3/disk.qcow2", 8 * MiB)
    await server.close()  # the agent goes away after Prepare succeeded

    server, transfer = await agent_serve(root, host_key, client_key)
    try:
        src = tmp_path / "src.qcow2"
        sha = make_disk(src, 2 * MiB)
        peer = PeerHost(name="dst", address=ADDRESS, port=server.port,
                        host_key=public_openssh(host_key))
        sent = await transfer.send(src=src, peer=peer, transfer_id="t3", progress=None)
        assert sent.checksum == sha
    finally:
        await server.close()
