"""The real :class:`~vmresize.agent.executor.Transfer`: the asyncssh migration service.

A thin adapter that binds the executor's disk-copy seam to ``migration_server`` (receiving,
on the destination) and ``migration_client`` (sending, on the source). The sender pins the
peer's host key from the task (taken from the peer's ``Host.status.hostKey``).
"""

from __future__ import annotations

from pathlib import Path

import asyncssh

from vmresize.agent.executor import ProgressFn, Received, Sent
from vmresize.agent.migration_client import send_disk
from vmresize.agent.migration_server import MigrationServer
from vmresize.api.hosttask import PeerHost


class SshTransfer:
    """Receive through a running :class:`MigrationServer`; send with ``send_disk``."""

    def __init__(self, server: MigrationServer, client_key: asyncssh.SSHKey) -> None:
        self.server = server
        self._client_key = client_key

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int) -> None:
        self.server.expect(transfer_id, rel_path, apparent_size)

    def received(self, transfer_id: str) -> Received | None:
        status = self.server.status(transfer_id)
        if status is None:
            return None
        return Received(complete=status.complete, sha256=status.sha256)

    def forget(self, transfer_id: str) -> None:
        self.server.forget(transfer_id)

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        result = await send_disk(src=src, address=peer.address, port=peer.port,
                                 host_key=peer.host_key, client_key=self._client_key,
                                 transfer_id=transfer_id, progress=progress)
        return Sent(checksum=result.checksum, size_bytes=result.size_bytes)
