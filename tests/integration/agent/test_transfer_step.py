"""The sends of one step share one SSH connection to the peer (real asyncssh on 127.0.0.1,
connections counted by a relay in front of the receiver), and a connection cut mid-send is
replaced: the send resumes on a new one and the step's later sends use that."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vmresize.agent.transfer.server import MigrationServer
from vmresize.agent.transfer.service import SshTransfer
from vmresize.agent.transfer.sparse import disk_checksum
from vmresize.api.hosttask import PeerHost

from .conftest import MiB, XferCutProxy, XferKeys

pytestmark = pytest.mark.asyncio(loop_scope="session")

MakeFile = Callable[[str, int, dict[int, int]], Path]
DIR = "instances/ns/vm/5e5e5e5e"
SIZES = {"disk.qcow2": 12 * MiB, "data.qcow2": 3 * MiB, "nvram.fd": MiB}


async def send_step(server: MigrationServer, keys: XferKeys, xfer_file: MakeFile,
                    cuts: list[int | None], steps: int = 1) -> tuple[XferCutProxy, list[str]]:
    """Send the SIZES files through a relay with ``cuts``, ``steps`` times (each step its
    own transfer ids); the relay and what differs from the source."""
    transfer = SshTransfer(server, keys.client)
    proxy = XferCutProxy(server.port, cuts=cuts)
    port = await proxy.start()
    peer = PeerHost(name="b", address="127.0.0.1", port=port, host_key=keys.host_pub)
    wrong = []
    try:
        for n in range(steps):
            srcs = {name: xfer_file(f"{n}-{name}", size, {0: size})
                    for name, size in SIZES.items()}
            for name, size in SIZES.items():
                server.expect(f"t{n}-{name}", f"{DIR}/{n}/{name}", size)
            async with transfer.step():
                for name, src in srcs.items():
                    sent = await transfer.send(src=src, peer=peer, transfer_id=f"t{n}-{name}",
                                               progress=None)
                    if sent.checksum != disk_checksum(server.root / DIR / str(n) / name):
                        wrong.append(name)
    finally:
        await proxy.close()
    return proxy, wrong


async def test_the_files_of_a_step_share_one_connection(
        xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_file: MakeFile) -> None:
    proxy, wrong = await send_step(xfer_server, xfer_keys, xfer_file, cuts=[], steps=2)
    assert wrong == []
    assert proxy.connections == 2  # one per step: the second step does not reuse the first's


async def test_a_connection_cut_mid_send_is_replaced_for_the_rest_of_the_step(
        xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_file: MakeFile) -> None:
    # The first connection dies 6 MiB into the 12 MiB disk: that send resumes on a second
    # one, which the two files after it use too.
    proxy, wrong = await send_step(xfer_server, xfer_keys, xfer_file, cuts=[6 * MiB])
    assert wrong == []
    assert proxy.connections == 2
    assert all(xfer_server.status(f"t0-{name}").complete for name in SIZES)  # type: ignore[union-attr]
