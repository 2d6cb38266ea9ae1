"""The bandwidth limit over real SSH: a send's own limit and the host's shared buckets
(the sender's for its sends, the receiver's for all the disks arriving at it).

Behaviour tests with a generous tolerance (10%), not timed performance tests: at 8 MiB/s a
32 MiB disk takes 4 s; the handshake and the receiver's verification add well under 0.4 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vmresize.agent.transfer.client import send_disk
from vmresize.agent.transfer.seam import StepBandwidth
from vmresize.agent.transfer.server import MigrationServer
from vmresize.agent.transfer.service import SshTransfer
from vmresize.agent.transfer.sparse import disk_checksum
from vmresize.agent.transfer.throttle import (
    TokenBucket,
    host_bucket,
    host_receive_bucket,
    receive_bucket,
    set_host_limit,
)
from vmresize.api.hosttask import PeerHost

from .conftest import MiB, XferKeys, xfer_start

pytestmark = pytest.mark.asyncio(loop_scope="session")

MakeFile = Callable[[str, int, dict[int, int]], Path]
LIMIT = 8 * MiB


async def test_a_send_runs_at_its_limit(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                        xfer_root: Path, xfer_file: MakeFile) -> None:
    size = 32 * MiB
    src = xfer_file("dense.img", size, {0: size})
    xfer_server.expect("t-1", "instances/ns/vm/a/disk.qcow2", size)
    rates: list[float] = []
    t0 = time.monotonic()
    result = await send_disk(src=src, address="127.0.0.1", port=xfer_server.port,
                             host_key=xfer_keys.host_pub, client_key=xfer_keys.client,
                             transfer_id="t-1", limit=LIMIT, host=TokenBucket(None),
                             progress=lambda d, t, r: rates.append(r))
    achieved = size / (time.monotonic() - t0)
    assert result.bytes_sent == size
    assert result.checksum == disk_checksum(xfer_root / "instances/ns/vm/a/disk.qcow2")
    assert 0.9 * LIMIT <= achieved <= 1.1 * LIMIT, f"{achieved / MiB:.2f} MiB/s"
    assert rates[-1] <= 1.1 * LIMIT  # the rate progress reports is the limited one


async def test_two_sends_share_the_hosts_limit(xfer_server: MigrationServer,
                                               xfer_keys: XferKeys, xfer_file: MakeFile) -> None:
    size = 16 * MiB
    host = TokenBucket(LIMIT)  # the agent's one bucket; each send has no limit of its own

    async def one(i: int) -> None:
        src = xfer_file(f"dense{i}.img", size, {0: size})
        xfer_server.expect(f"t-{i}", f"instances/ns/vm{i}/a/disk.qcow2", size)
        await send_disk(src=src, address="127.0.0.1", port=xfer_server.port,
                        host_key=xfer_keys.host_pub, client_key=xfer_keys.client,
                        transfer_id=f"t-{i}", host=host)

    t0 = time.monotonic()
    await asyncio.gather(one(1), one(2))
    achieved = 2 * size / (time.monotonic() - t0)
    assert 0.9 * LIMIT <= achieved <= 1.1 * LIMIT, f"{achieved / MiB:.2f} MiB/s together"


async def test_a_migrate_steps_limits_reach_the_send(xfer_server: MigrationServer,
                                                     xfer_keys: XferKeys,
                                                     xfer_file: MakeFile) -> None:
    # The task's own limit is 16 MiB/s, its source Host's 8: the agent's shared bucket is
    # set from the task and holds the send to 8. After the step the bucket keeps the Host's
    # limit (the next task brings it again). The receiver here is this process's server,
    # so its receive bucket is at 8 too: in and out are separate buckets, and a copy
    # between two limited hosts runs at the limit, not at half of it.
    size = 24 * MiB
    src = xfer_file("step.img", size, {0: size})
    xfer_server.expect("t-step", "instances/ns/vm/s/disk.qcow2", size)
    transfer = SshTransfer(xfer_server, xfer_keys.client)
    peer = PeerHost(name="b", address="127.0.0.1", port=xfer_server.port,
                    host_key=xfer_keys.host_pub)
    try:
        t0 = time.monotonic()
        async with transfer.step(StepBandwidth(limit=16, host=8)):
            await transfer.send(src=src, peer=peer, transfer_id="t-step", progress=None)
        achieved = size / (time.monotonic() - t0)
        assert host_bucket().rate == host_receive_bucket().rate == LIMIT
    finally:
        set_host_limit(None)  # the process's bucket: leave it unlimited for other tests
    assert 0.9 * LIMIT <= achieved <= 1.1 * LIMIT, f"{achieved / MiB:.2f} MiB/s"


async def test_copies_from_two_sources_share_the_receivers_limit(
        xfer_root: Path, xfer_keys: XferKeys, xfer_file: MakeFile) -> None:
    # Two source hosts, unlimited themselves, each send a disk to one destination whose
    # host limit is 8 MiB/s. Each copy runs under 8 (the effective limit includes the
    # destination's), so only the receiver's shared bucket holds them to 8 together;
    # without it they arrive at 16.
    size = 16 * MiB
    server = await xfer_start(xfer_root, xfer_keys, bucket=receive_bucket(LIMIT))
    try:
        async def one(i: int) -> None:
            src = xfer_file(f"in{i}.img", size, {0: size})
            server.expect(f"t-in{i}", f"instances/ns/vm{i}/a/disk.qcow2", size)
            await send_disk(src=src, address="127.0.0.1", port=server.port,
                            host_key=xfer_keys.host_pub, client_key=xfer_keys.client,
                            transfer_id=f"t-in{i}", limit=LIMIT, host=TokenBucket(None))

        t0 = time.monotonic()
        await asyncio.gather(one(1), one(2))
        achieved = 2 * size / (time.monotonic() - t0)
    finally:
        await server.close()
    assert 0.9 * LIMIT <= achieved <= 1.1 * LIMIT, f"{achieved / MiB:.2f} MiB/s together"
