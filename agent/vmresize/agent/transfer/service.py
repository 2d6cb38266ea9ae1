"""The real :class:`~vmresize.agent.executor.Transfer`: the asyncssh migration service.

A thin adapter that binds the executor's disk-copy seam to :mod:`~vmresize.agent.transfer.server`
(receiving, on the destination) and :mod:`~vmresize.agent.transfer.client` (sending, on the
source). The sender pins the
peer's host key from the task (taken from the peer's ``Host.status.hostKey``).

Prepare runs before the source is powered off, so the destination cannot know the exact
size of the qcow2 file that will arrive (the guest may still grow it); the operator sends
an upper bound, the flavor's disk size, in ``expectedBytes``. The transfer is therefore
registered with ``at_most=True`` (the sender's first hello fixes the exact size, and the
server persists it), with room for qcow2's own metadata on top of the virtual size.

The sends of one step (:meth:`SshTransfer.step`, per asyncio task: steps of other tasks
running meanwhile have their own) share one connection to the peer.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh

from vmresize.agent.transfer.client import send_disk
from vmresize.agent.transfer.connections import Connections
from vmresize.agent.transfer.seam import ProgressFn, Received, Sent, StepBandwidth
from vmresize.agent.transfer.server import MigrationServer
from vmresize.agent.transfer.throttle import MiB, set_host_limit
from vmresize.api.hosttask import PeerHost

QCOW2_SLACK_BYTES = 64 * 1024 * 1024
"""qcow2 metadata (header, L1/L2 tables, refcounts) on top of the virtual size; 64 MiB
covers the tables of a multi-TiB image with 64 KiB clusters."""
_STEP: contextvars.ContextVar[Connections | None] = contextvars.ContextVar(
    "vmresize_transfer_step", default=None)
_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "vmresize_transfer_limit", default=None)


class SshTransfer:
    """Receive through a running :class:`MigrationServer`; send with ``send_disk``."""

    def __init__(self, server: MigrationServer, client_key: asyncssh.SSHKey) -> None:
        self.server = server
        self._client_key = client_key

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int, *,
               promised: int | None = None) -> None:
        """Accept a disk of at most ``apparent_size`` bytes plus qcow2 metadata, counted as
        ``promised`` bytes (default: that bound) in :meth:`pending_bytes`."""
        self.server.expect(transfer_id, rel_path, apparent_size + QCOW2_SLACK_BYTES,
                           at_most=True, promised=promised)

    def received(self, transfer_id: str) -> Received | None:
        """Whether the disk of ``transfer_id`` arrived complete, and its checksum; None if the
        server does not know the transfer."""
        status = self.server.status(transfer_id)
        if status is None:
            return None
        return Received(complete=status.complete, checksum=status.checksum)

    def forget(self, transfer_id: str) -> None:
        """Drop the server's bookkeeping of ``transfer_id`` (and an incomplete partial file)."""
        self.server.forget(transfer_id)

    def pending_bytes(self, directory: Path) -> int:
        """Bytes that transfers in flight into ``directory``'s filesystem may still write."""
        return self.server.pending_bytes(directory)

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        """Send ``src`` to ``peer``'s migration server, trusting only its published host key;
        returns the checksum both sides agreed on."""
        result = await send_disk(src=src, address=peer.address, port=peer.port,
                                 host_key=peer.host_key, client_key=self._client_key,
                                 transfer_id=transfer_id, progress=progress,
                                 connections=_STEP.get(), limit=_LIMIT.get())
        return Sent(checksum=result.checksum, size_bytes=result.size_bytes)

    @contextlib.asynccontextmanager
    async def step(self, bandwidth: StepBandwidth | None = None) -> AsyncIterator[None]:
        """Sends inside share their connections (opened lazily), all closed on exit, and
        run under ``bandwidth``: the step's own limit, and the host's, which the task
        brings as the operator last read the Host (it sets the agent's shared buckets)."""
        if bandwidth is not None:
            set_host_limit(bandwidth.host)
        conns = Connections()
        token = _STEP.set(conns)
        limit = _LIMIT.set(bandwidth.limit * MiB if bandwidth and bandwidth.limit else None)
        try:
            yield
        finally:
            _LIMIT.reset(limit)
            _STEP.reset(token)
            await conns.close()
