"""The real :class:`~vmresize.agent.executor.Transfer`: the asyncssh migration service.

A thin adapter that binds the executor's disk-copy seam to ``migration_server`` (receiving,
on the destination) and ``migration_client`` (sending, on the source). The sender pins the
peer's host key from the task (taken from the peer's ``Host.status.hostKey``).

One gap is bridged here. Prepare runs before the source is powered off, so the destination
cannot know the exact size of the qcow2 file that will arrive (the guest may still grow
it); the operator therefore sends an upper bound (the flavor's disk size) in
``expectedBytes``. ``MigrationServer.expect`` wants the exact apparent size. So Prepare
records a *pending* expectation (``<disk>.expect``, JSON, under the storage root, so it
survives an agent restart), and the transfer is registered with the server when the sender
says hello with the real size, if that size is within the bound. The hook is installed on
the server instance (its ``_claim``); it should become a ``max_size`` argument of
``expect`` in ``migration_server``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import asyncssh

from vmresize.agent.executor import ProgressFn, Received, Sent
from vmresize.agent.migration_client import send_disk
from vmresize.agent.migration_server import MigrationServer
from vmresize.agent.paths import confine
from vmresize.agent.transfer_errors import PathEscape, TransferRefused
from vmresize.api.hosttask import PeerHost

PENDING_SUFFIX = ".expect"
QCOW2_SLACK_BYTES = 64 * 1024 * 1024
"""qcow2 metadata (header, L1/L2 tables, refcounts) on top of the virtual size; 64 MiB
covers the tables of a multi-TiB image with 64 KiB clusters."""
_TRANSFER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class SshTransfer:
    """Receive through a running :class:`MigrationServer`; send with ``send_disk``."""

    def __init__(self, server: MigrationServer, client_key: asyncssh.SSHKey) -> None:
        self.server = server
        self.root = server.root
        self._client_key = client_key
        self._pending: dict[str, tuple[str, int]] = {}
        self._load_pending()
        original = server._claim

        def claim(transfer_id: str, size: object, session: Any) -> Any:
            self._register_pending(transfer_id, size)
            return original(transfer_id, size, session)

        setattr(server, "_claim", claim)  # noqa: B010 - see the module docstring

    # --- pending expectations -----------------------------------------------------------

    def _load_pending(self) -> None:
        for path in self.root.rglob("*" + PENDING_SUFFIX):
            try:
                doc = json.loads(path.read_text())
                rel, tid, max_bytes = str(doc["rel_path"]), str(doc["transfer_id"]), int(
                    doc["max_bytes"])
                if confine(self.root, rel + PENDING_SUFFIX) != path.resolve():
                    continue
            except (OSError, ValueError, KeyError, TypeError, PathEscape):
                continue
            self._pending[tid] = (rel, max_bytes)

    def _register_pending(self, transfer_id: str, size: object) -> None:
        pending = self._pending.get(transfer_id)
        if pending is None or self.server.status(transfer_id) is not None:
            return
        rel, max_bytes = pending
        if not isinstance(size, int) or size < 0 or size > max_bytes + QCOW2_SLACK_BYTES:
            raise TransferRefused(f"transfer {transfer_id}: size {size!r} exceeds the "
                                  f"{max_bytes} bytes prepared for")
        self.server.expect(transfer_id, rel, size)
        self._drop_pending(transfer_id)

    def _drop_pending(self, transfer_id: str) -> None:
        pending = self._pending.pop(transfer_id, None)
        if pending is not None:
            with contextlib.suppress(FileNotFoundError):
                confine(self.root, pending[0] + PENDING_SUFFIX).unlink()

    # --- the Transfer protocol ----------------------------------------------------------

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int) -> None:
        """Accept a disk of at most ``apparent_size`` bytes (plus qcow2 metadata)."""
        if not _TRANSFER_ID.match(transfer_id):
            raise TransferRefused(f"bad transfer id {transfer_id!r}")
        if self.server.status(transfer_id) is not None:
            return
        known = self._pending.get(transfer_id)
        if known is not None:
            if known != (rel_path, apparent_size):
                raise TransferRefused(f"transfer {transfer_id} already prepared differently")
            return
        final = confine(self.root, rel_path)
        if final.exists():
            raise TransferRefused(f"destination already exists: {rel_path}")
        marker = confine(self.root, rel_path + PENDING_SUFFIX)
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"transfer_id": transfer_id, "rel_path": rel_path,
                                   "max_bytes": apparent_size}))
        os.replace(tmp, marker)
        self._pending[transfer_id] = (rel_path, apparent_size)

    def received(self, transfer_id: str) -> Received | None:
        status = self.server.status(transfer_id)
        if status is None:
            return Received(False, None) if transfer_id in self._pending else None
        return Received(complete=status.complete, sha256=status.sha256)

    def forget(self, transfer_id: str) -> None:
        self._drop_pending(transfer_id)
        self.server.forget(transfer_id)

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        result = await send_disk(src=src, address=peer.address, port=peer.port,
                                 host_key=peer.host_key, client_key=self._client_key,
                                 transfer_id=transfer_id, progress=progress)
        return Sent(checksum=result.checksum, size_bytes=result.size_bytes)
