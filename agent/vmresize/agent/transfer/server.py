"""The receiving side of a disk migration: an asyncssh server that is not a shell.

It owns the SSH policy of the migration port, the channel handler that writes incoming
data, and the registry of expected transfers (with their sidecar state).

SSH policy: public-key authentication only, against ``authorized_keys`` (OpenSSH lines of
the shared migration key); no pty, shell, exec, sftp/scp, other subsystems, port/agent/X11
forwarding. The only thing a client can do is open the ``SUBSYSTEM`` and push the data of a
transfer registered beforehand with :meth:`MigrationServer.expect`.

Receiving: ``<final>.partial`` is created with ``O_NOFOLLOW`` under the root (every path
through :func:`vmresize.agent.paths.confine`), ``ftruncate``-d to the apparent size, and
only data is ``pwrite``-n, so holes stay holes. Received ranges are kept in
``<final>.xfer`` (JSON, written atomically by rename) about once a second, on disconnect
and on completion; a reconnecting sender reads them in ``STATE`` and sends the rest. Writes
go through a :class:`~vmresize.agent.transfer.sparse.SparseSink` (writer thread; reading
the channel pauses when 8 MiB are queued). Every session takes its data from the server's
one receive bucket (the host's limit,
:func:`~vmresize.agent.transfer.throttle.host_receive_bucket`), so all the disks arriving
at this host together run at most at its limit. On ``DONE`` the receiver takes the disk
checksum of what it wrote (streamed while writing when the transfer ran in order from
scratch, else a read-back of the partial file), and after ``fsync`` renames the partial
into place only if it equals the sender's; otherwise the ranges are reset so a retry
re-sends everything. Sidecars are found again on restart, so a kill -9 of the agent loses
at most a second of progress. The ranges are not fsynced (page cache survives a process
crash; after a power loss the final checksum catches the damage and triggers the reset).
The wire protocol and the sidecar format live in :mod:`vmresize.agent.transfer.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from vmresize.agent.errors import PathEscapeError, TransferBusyError, TransferRefusedError
from vmresize.agent.paths import confine
from vmresize.agent.transfer import fastpath
from vmresize.agent.transfer.protocol import (
    CHANNEL_MAX_PKTSIZE,
    CHANNEL_WINDOW,
    ENCRYPTION_ALGS,
    PARTIAL_SUFFIX,
    SIDECAR_SUFFIX,
    SOCKET_READ,
    SUBSYSTEM,
    ReceiveState,
    TransferStatus,
)
from vmresize.agent.transfer.session import DiskSession
from vmresize.agent.transfer.throttle import TokenBucket, host_receive_bucket

__all__ = [
    "SUBSYSTEM", "MigrationServer", "TransferStatus", "start_migration_server",
]

log = logging.getLogger(__name__)


class _SSHPolicy(asyncssh.SSHServer):
    """Connection-level policy: public keys only, no forwarding, one session kind."""

    def __init__(self, server: MigrationServer) -> None:
        self._server = server
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        fastpath.deliver_views(conn)  # our only channels, DiskSessions, take memoryviews
        fastpath.read_size(conn, SOCKET_READ)
        self._server._conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._server._conns.discard(self._conn)

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def session_requested(self) -> Any:
        assert self._conn is not None
        chan = self._conn.create_server_channel(encoding=None, window=CHANNEL_WINDOW,
                                                max_pktsize=CHANNEL_MAX_PKTSIZE)
        session = DiskSession(self._server)
        self._server._sessions.add(session)
        session.released.add_done_callback(lambda _: self._server._sessions.discard(session))
        return chan, session

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False


class MigrationServer:
    """A listening migration service for one storage root (see the module docstring)."""

    def __init__(self, root: Path, *, bucket: TokenBucket | None = None) -> None:
        self.root = root.resolve(strict=True)
        # shared by every incoming session; tests give each server of one process its own
        self.bucket = bucket if bucket is not None else host_receive_bucket()
        self._transfers: dict[str, ReceiveState] = {}
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: set[DiskSession] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (the OS chose it if the server was started with port 0)."""
        assert self._acceptor is not None
        return self._acceptor.get_port()

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int, *,
               at_most: bool = False, promised: int | None = None) -> None:
        """Register a transfer (idempotent for identical arguments; progress is kept).

        With ``at_most`` the sender may declare any size up to ``apparent_size``; its first
        HELLO fixes the size for the rest of the transfer (resumes must match it).
        ``promised`` (``at_most`` only): the bytes :meth:`pending_bytes` counts for it
        instead of that bound (what Prepare reserved: a pre-copy overlay's reserve); the
        latest value given wins.
        """
        if not transfer_id or len(transfer_id) > 253:
            raise TransferRefusedError(f"bad transfer id {transfer_id!r}")
        if apparent_size < 0 or (promised is not None and promised < 0):
            raise TransferRefusedError(f"bad size {apparent_size} (promised {promised})")
        if promised is not None and not at_most:
            raise TransferRefusedError(
                "only an at_most transfer can be promised less than its size")
        final = confine(self.root, rel_path)
        confine(self.root, rel_path + PARTIAL_SUFFIX)
        confine(self.root, rel_path + SIDECAR_SUFFIX)
        known = self._transfers.get(transfer_id)
        if known is not None:
            if (known.rel_path, known.bound, known.at_most) != (rel_path, apparent_size,
                                                                 at_most):
                raise TransferRefusedError(f"transfer {transfer_id} already registered differently")
            if promised is not None and known.promised != promised:
                known.promised = promised  # e.g. a sidecar of an older agent: it had none
                known.save()
            return
        for other in self._transfers.values():
            if other.final == final:
                raise TransferRefusedError(f"{rel_path} is the target of {other.transfer_id}")
        if final.exists() or final.is_symlink():
            raise TransferRefusedError(f"destination already exists: {rel_path}")
        final.parent.mkdir(parents=True, exist_ok=True)
        xfer = ReceiveState(transfer_id, rel_path, apparent_size, final, bound=apparent_size,
                            at_most=at_most, fixed=not at_most, promised=promised)
        xfer.save()
        self._transfers[transfer_id] = xfer

    def status(self, transfer_id: str) -> TransferStatus | None:
        """Receive state of ``transfer_id`` (``None`` if unknown); Finish checks it."""
        xfer = self._transfers.get(transfer_id)
        return xfer.status() if xfer is not None else None

    def pending_bytes(self, directory: Path) -> int:
        """Bytes that unfinished transfers on ``directory``'s filesystem may still write, as
        Prepare promised them (:meth:`ReceiveState.pending`)."""
        dev = os.stat(directory).st_dev
        total = 0
        for xfer in self._transfers.values():
            if xfer.complete:
                continue
            try:
                same = os.stat(xfer.final.parent).st_dev == dev
            except FileNotFoundError:
                continue
            if same:
                total += xfer.pending()
        return total

    def forget(self, transfer_id: str) -> None:
        """Drop a transfer's bookkeeping (sidecar, and the partial file if incomplete)."""
        xfer = self._transfers.pop(transfer_id, None)
        if xfer is None:
            return
        if xfer.session is not None:
            xfer.session.supersede()
        for path in (xfer.sidecar, *(() if xfer.complete else (xfer.partial,))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def recover(self) -> int:
        """Re-register transfers from sidecars under the root (after a restart)."""
        found = 0
        for sidecar in self.root.rglob("*" + SIDECAR_SUFFIX):
            try:
                xfer = ReceiveState.load(self.root, sidecar)
                if xfer is None:
                    continue
            except (OSError, ValueError, KeyError, TypeError, PathEscapeError) as e:
                log.warning("ignoring unreadable transfer state %s: %s", sidecar, e)
                continue
            self._transfers.setdefault(xfer.transfer_id, xfer)
            found += 1
        return found

    def drop_connections(self) -> None:
        """Abort every live SSH connection (senders reconnect and resume)."""
        for conn in list(self._conns):
            conn.abort()

    def _claim(self, transfer_id: str, size: object, session: DiskSession) -> ReceiveState:
        xfer = self._transfers.get(transfer_id)
        if xfer is None:
            raise TransferRefusedError(f"unknown transfer id {transfer_id!r}")
        if not xfer.fixed:
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= xfer.bound:
                raise TransferRefusedError(f"size {size!r} exceeds the {xfer.bound} bytes expected")
            xfer.size, xfer.fixed = size, True
            xfer.save()
        if size != xfer.size:
            raise TransferRefusedError(f"size {size!r} != expected {xfer.size}")
        if xfer.session is not None and xfer.session.finishing:
            raise TransferBusyError(f"transfer {transfer_id} is being verified; retry")
        if xfer.session is not None and xfer.session is not session:
            xfer.session.supersede()  # a reconnecting sender replaces a half-dead session
        xfer.session = session
        return xfer

    async def close(self) -> None:
        """Stop listening, abort live sessions and save their progress."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        self.drop_connections()
        for xfer in self._transfers.values():
            if xfer.session is not None:
                xfer.session.supersede()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in list(self._sessions):
            session.supersede()
        # Wait until every writer thread has flushed and the sidecars are saved.
        await asyncio.wait_for(
            asyncio.gather(*(s.released for s in self._sessions), return_exceptions=True),
            timeout=60)


async def start_migration_server(*, root: Path, host_key: asyncssh.SSHKey,
                                 authorized_keys: Sequence[str], host: str,
                                 port: int = 0,
                                 bucket: TokenBucket | None = None) -> MigrationServer:
    """Listen on ``host:port`` and serve disk uploads into ``root`` (see module docstring);
    ``bucket``: the receive limit (default: this process's host receive bucket)."""
    server = MigrationServer(root, bucket=bucket)
    server.recover()
    authorized = asyncssh.import_authorized_keys("".join(k.strip() + "\n"
                                                         for k in authorized_keys))
    server._acceptor = await asyncssh.listen(
        host, port,
        server_factory=lambda: _SSHPolicy(server),
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        encryption_algs=list(ENCRYPTION_ALGS),
        compression_algs=["none"],
        allow_pty=False, agent_forwarding=False, x11_forwarding=False,
        password_auth=False, kbdint_auth=False, host_based_auth=False, gss_host=None,
        sftp_factory=None, allow_scp=False,
        login_timeout=30, keepalive_interval=15, keepalive_count_max=4,
    )
    return server
