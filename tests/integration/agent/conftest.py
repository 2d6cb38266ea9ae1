"""Fixtures for the disk-transfer tests: real asyncssh server/client on 127.0.0.1.

All fixtures are prefixed ``xfer_`` so they never clash with the libvirt helper's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from vmresize.agent.transfer import fastpath
from vmresize.agent.transfer.keys import generate_key, load_or_create_host_key, public_openssh
from vmresize.agent.transfer.server import MigrationServer, start_migration_server
from vmresize.agent.transfer.throttle import TokenBucket

MiB = 1024 * 1024


@pytest.fixture(autouse=True, scope="session")
def xfer_fast_path() -> None:
    """The transfer tests run on the fast path, as an agent does once its self-test passed
    (test_fastpath_fallback.py covers asyncssh's own path)."""
    assert fastpath.install()


@dataclass
class XferKeys:
    """Host key of the receiver, the authorized migration key and an unknown key."""

    host: asyncssh.SSHKey
    client: asyncssh.SSHKey
    stranger: asyncssh.SSHKey

    @property
    def host_pub(self) -> str:
        return public_openssh(self.host)


@pytest.fixture
def xfer_keys(tmp_path: Path) -> XferKeys:
    return XferKeys(load_or_create_host_key(tmp_path / "state"), generate_key(),
                    generate_key())


@pytest.fixture
def xfer_root(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    root.mkdir()
    return root


async def xfer_start(root: Path, keys: XferKeys, *,
                     bucket: TokenBucket | None = None) -> MigrationServer:
    return await start_migration_server(root=root, host_key=keys.host,
                                        authorized_keys=[public_openssh(keys.client)],
                                        host="127.0.0.1", bucket=bucket)


@pytest_asyncio.fixture(loop_scope="session")
async def xfer_server(xfer_root: Path, xfer_keys: XferKeys) -> AsyncIterator[MigrationServer]:
    server = await xfer_start(xfer_root, xfer_keys)
    try:
        yield server
    finally:
        await server.close()


def xfer_make_file(path: Path, size: int, data: dict[int, int]) -> Path:
    """A sparse file of ``size`` with random data of ``data[offset]`` bytes at each offset."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for off, n in data.items():
            os.pwrite(fd, os.urandom(n), off)
    finally:
        os.close(fd)
    return path


@pytest.fixture
def xfer_file(tmp_path: Path) -> Callable[[str, int, dict[int, int]], Path]:
    def make(name: str, size: int, data: dict[int, int]) -> Path:
        return xfer_make_file(tmp_path / name, size, data)
    return make


class XferCutProxy:
    """A TCP relay on 127.0.0.1 that cuts connection *i* after ``cuts[i]`` upstream bytes.

    Connections beyond ``len(cuts)`` (or with ``None``) pass through untouched. The cut is a
    real network failure for both asyncssh ends (transports aborted), not a mock.
    """

    def __init__(self, upstream_port: int, cuts: list[int | None],
                 on_cut: Callable[[], Awaitable[None]] | None = None) -> None:
        self.upstream_port = upstream_port
        self.cuts = list(cuts)
        self.connections = 0
        self.on_cut = on_cut  # e.g. restart the receiver; new connections wait for it
        self._ready = asyncio.Event()
        self._ready.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        cut = self.cuts[index] if index < len(self.cuts) else None
        await self._ready.wait()
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        def abort() -> None:
            cw.transport.abort()
            uw.transport.abort()

        def cut_now() -> None:
            abort()
            if self.on_cut is not None:
                self._ready.clear()
                task = asyncio.get_running_loop().create_task(self._run_on_cut())
                self._tasks.add(task)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, limit: int | None) -> None:
            moved = 0
            try:
                while data := await r.read(256 * 1024):
                    if limit is not None and moved + len(data) >= limit:
                        cut_now()
                        return
                    moved += len(data)
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            abort()

        await asyncio.gather(pump(cr, uw, cut), pump(ur, cw, None))

    async def _run_on_cut(self) -> None:
        assert self.on_cut is not None
        try:
            await self.on_cut()
        finally:
            self._ready.set()

    async def close(self) -> None:
        await asyncio.gather(*self._tasks)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
