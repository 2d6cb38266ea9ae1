"""The receiving side of a disk migration: an asyncssh server that is not a shell.

It owns the SSH policy of the migration port, the channel handler that writes incoming
data, and the registry of expected transfers (with their sidecar state).

Public API::

    SUBSYSTEM = "vmresize-disk@vmresize.io"
    TransferStatus(transfer_id, rel_path, size, received, complete, sha256)   # frozen
    await start_migration_server(*, root: Path, host_key: asyncssh.SSHKey,
                                 authorized_keys: Sequence[str], host: str, port: int = 0)
        -> MigrationServer
    MigrationServer.port -> int                                 # bound port (port=0 picks one)
    MigrationServer.expect(transfer_id, rel_path, apparent_size, *, at_most=False) -> None
        # Prepare step; at_most=True: apparent_size is an upper bound and the sender's
        # first HELLO fixes the exact size (persisted), e.g. a qcow2 that may still grow
    MigrationServer.status(transfer_id) -> TransferStatus | None           # Finish step
    MigrationServer.forget(transfer_id) -> None          # drop bookkeeping after Finish
    MigrationServer.drop_connections() -> None           # abort live sessions (they resume)
    MigrationServer.recover() -> int      # re-register from sidecars (done at start)
    await MigrationServer.close() -> None

SSH policy: public-key authentication only, against ``authorized_keys`` (OpenSSH lines of
the shared migration key); no pty, shell, exec, sftp/scp, other subsystems, port/agent/X11
forwarding. The only thing a client can do is open the ``SUBSYSTEM`` and push the data of a
transfer registered beforehand with :meth:`MigrationServer.expect`.

Receiving: ``<final>.partial`` is created with ``O_NOFOLLOW`` under the root (every path
through :func:`vmresize.agent.paths.confine`), ``ftruncate``-d to the apparent size, and only
data is ``pwrite``-n, so holes stay holes. Received ranges are kept in ``<final>.xfer``
(JSON, written atomically by rename) about once a second, on disconnect and on
completion; a reconnecting sender reads them in ``STATE`` and sends the rest. Writes go
through a :class:`~vmresize.agent.sparse.SparseSink` (writer thread; reading the channel
pauses when 8 MiB are queued). On ``DONE`` the receiver takes the sha256 of what it wrote
(streamed while writing when the transfer ran in order from scratch, else a read-back of
the partial file), and after ``fsync`` renames the partial into place only if it equals
the sender's; otherwise the ranges are reset so a retry re-sends everything. Sidecars are
found again on restart, so a kill -9 of the agent loses at most a second of progress.
The ranges are not fsynced (page cache survives a process crash; after a power loss the
final checksum catches the damage and triggers the reset). The wire protocol and the
sidecar format live in :mod:`vmresize.agent.transfer_protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from vmresize.agent.paths import confine, open_nofollow
from vmresize.agent.sparse import SparseSink, sha256_fd
from vmresize.agent.transfer_errors import PathEscape, TransferError, TransferRefused
from vmresize.agent.transfer_protocol import (
    CHANNEL_MAX_PKTSIZE,
    CHANNEL_WINDOW,
    DATA,
    DONE,
    ENCRYPTION_ALGS,
    ERROR,
    HEADER,
    HELLO,
    MAX_CONTROL,
    PARTIAL_SUFFIX,
    PROTOCOL_VERSION,
    RESULT,
    SIDECAR_SUFFIX,
    STATE,
    SUBSYSTEM,
    ReceiveState,
    TransferStatus,
)

__all__ = [
    "SUBSYSTEM", "MigrationServer", "TransferStatus", "start_migration_server",
]

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 1.0
# Bytes queued for the writer thread before we stop reading the channel (SSH flow control
# then holds the sender); reading resumes below the low mark.
PENDING_HIGH, PENDING_LOW = 8 * 1024 * 1024, 2 * 1024 * 1024


class _Busy(TransferRefused):
    """The transfer is being verified by an earlier session; the sender should retry."""


class _DiskSession(asyncssh.SSHServerSession[bytes]):
    """One subsystem channel: parses frames and writes DATA straight into the partial."""

    def __init__(self, server: MigrationServer) -> None:
        self._server = server
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._buf = bytearray()          # header / control payload being assembled
        self._need = HEADER.size
        self._kind = 0
        self._data_off = 0               # next file offset of the DATA payload
        self._data_left = 0
        self._xfer: ReceiveState | None = None
        self._sink: SparseSink | None = None
        self._pending = 0                # bytes queued to the sink, not yet written
        self._paused = False
        self._last_save = 0.0
        self._closed = False
        self._releasing = False
        self.finishing = False
        self._loop = asyncio.get_running_loop()
        self.released: asyncio.Future[None] = self._loop.create_future()

    # -- SSH policy: only our subsystem --------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Mapping[int, int]) -> bool:
        return False

    def shell_requested(self) -> bool:
        return False

    def exec_requested(self, command: str) -> bool:
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == SUBSYSTEM

    def break_received(self, msec: int) -> bool:
        return False

    # -- frames --------------------------------------------------------------------------
    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        view = memoryview(data)
        try:
            while view and not self._closed:
                if self._data_left:
                    n = min(self._data_left, len(view))
                    self._write(view[:n])
                    view = view[n:]
                    continue
                take = min(self._need - len(self._buf), len(view))
                self._buf += view[:take]
                view = view[take:]
                if len(self._buf) == self._need:
                    self._frame_ready()
        except _Busy as e:
            self._fail("busy", str(e))
        except (TransferRefused, PathEscape) as e:
            self._fail("refused", str(e))
        except (ValueError, OSError) as e:
            self._fail("error", str(e))

    def _frame_ready(self) -> None:
        if self._need == HEADER.size and not self._kind:
            kind, offset, length = HEADER.unpack(self._buf)
            self._buf.clear()
            if kind == DATA:
                self._start_data(offset, length)
                return
            if kind not in (HELLO, DONE) or length > MAX_CONTROL:
                raise ValueError(f"unexpected frame kind {kind} / length {length}")
            self._kind, self._need = kind, length
            if length:
                return
        payload = json.loads(bytes(self._buf) or b"{}")
        kind = self._kind
        self._buf.clear()
        self._kind, self._need = 0, HEADER.size
        if kind == HELLO:
            self._hello(payload)
        else:
            self._done(payload)

    def _send(self, kind: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        assert self._chan is not None
        self._chan.write(HEADER.pack(kind, 0, len(body)) + body)

    def _hello(self, doc: dict[str, Any]) -> None:
        if self._xfer is not None:
            raise ValueError("HELLO sent twice")
        if doc.get("version") != PROTOCOL_VERSION:
            raise TransferRefused(f"unsupported protocol version {doc.get('version')!r}")
        xfer = self._server._claim(str(doc.get("transfer_id")), doc.get("size"), self)
        self._xfer = xfer
        if xfer.complete:
            self._send(STATE, {"complete": True, "sha256": xfer.sha256, "have": xfer.ranges})
            return
        if xfer.ranges and not xfer.partial.exists():
            xfer.ranges = []  # the partial file is gone: what the sidecar says is stale
        fd = open_nofollow(xfer.partial, os.O_RDWR | os.O_CREAT)
        try:
            fresh = not xfer.ranges
            if fresh:
                os.ftruncate(fd, 0)  # start clean: no stale bytes where holes belong
            os.ftruncate(fd, xfer.size)
        except OSError:
            os.close(fd)
            raise
        loop = self._loop

        def written(offset: int, length: int) -> None:  # on the writer thread
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(self._written, xfer, offset, length)

        # A fresh transfer arrives in order, so the sha256 can be streamed as it is
        # written; after a resume the receiver re-reads the file instead.
        self._sink = SparseSink(fd, xfer.size, stream_hash=fresh, on_written=written)
        self._last_save = loop.time()
        self._send(STATE, {"complete": False, "have": xfer.ranges})

    def _start_data(self, offset: int, length: int) -> None:
        xfer = self._xfer
        if xfer is None or xfer.complete or self._sink is None or self.finishing:
            raise ValueError("DATA before HELLO or after completion")
        if offset + length > xfer.size:
            raise ValueError(f"DATA [{offset}, +{length}) beyond size {xfer.size}")
        self._data_off, self._data_left = offset, length

    def _write(self, chunk: memoryview) -> None:
        assert self._sink is not None
        assert self._chan is not None
        n = len(chunk)
        self._sink.write(self._data_off, chunk)  # a view of an immutable packet: no copy
        self._data_off += n
        self._data_left -= n
        self._pending += n
        if self._pending > PENDING_HIGH and not self._paused:
            self._paused = True
            self._chan.pause_reading()

    def _written(self, xfer: ReceiveState, offset: int, length: int) -> None:
        """On the loop: ``[offset, +length)`` is in the partial file."""
        xfer.add_range(offset, offset + length)
        self._pending -= length
        if self._paused and self._pending < PENDING_LOW and not self._closed \
                and not self.finishing:
            self._paused = False
            assert self._chan is not None
            self._chan.resume_reading()
        now = self._loop.time()
        if now - self._last_save >= CHECKPOINT_SECONDS:
            self._last_save = now
            with contextlib.suppress(OSError):
                xfer.save()

    def _done(self, doc: dict[str, Any]) -> None:
        if self._xfer is None or self.finishing:
            raise ValueError("DONE before HELLO")
        self.finishing = True
        assert self._chan is not None
        self._chan.pause_reading()
        task = asyncio.get_running_loop().create_task(self._finish(str(doc.get("sha256"))))
        self._server._tasks.add(task)
        task.add_done_callback(self._server._tasks.discard)

    async def _finish(self, declared: str) -> None:
        xfer = self._xfer
        assert xfer is not None
        try:
            if xfer.complete:
                ok, actual = xfer.sha256 == declared, xfer.sha256
            else:
                sink = self._sink
                assert sink is not None
                streamed = await asyncio.wrap_future(sink.digest())
                actual = streamed or await asyncio.wrap_future(sink.call(sha256_fd))
                ok = actual == declared
                if ok:  # commit even if the sender vanished: it will see STATE complete
                    partial, final = xfer.partial, xfer.final
                    await asyncio.wrap_future(sink.call(lambda fd: _commit(fd, partial, final)))
                    xfer.complete, xfer.sha256 = True, actual
                else:  # start over on the next attempt
                    xfer.ranges = []
                xfer.save()
        except asyncio.CancelledError:  # server shutting down: release, keep the ranges
            self._close()
            raise
        except (OSError, TransferError) as e:
            self._fail("error", f"finishing: {e}")
            return
        if self._closed:
            self._release()
            return
        if ok:
            self._send(RESULT, {"ok": True, "sha256": actual})
        else:
            self._send(ERROR, {"code": "checksum-mismatch", "sha256": actual,
                               "message": "receiver sha256 differs from the sender's"})
        self._close()

    def _fail(self, code: str, message: str) -> None:
        log.warning("migration session refused: %s: %s", code, message)
        self.finishing = False
        if self._chan is not None and not self._closed:
            self._send(ERROR, {"code": code, "message": message})
            self._chan.exit(1)
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._chan is not None:
                self._chan.close()
        self._release()

    def _release(self) -> None:
        """Idempotent: flush the sink, save the ranges, then resolve ``released``."""
        if self._releasing:
            return
        self._releasing = True
        xfer, self._xfer = self._xfer, None
        sink, self._sink = self._sink, None
        if xfer is not None and xfer.session is self:
            xfer.session = None

        def drained() -> None:  # on the loop, once the sink wrote its queue and closed
            if xfer is not None and not xfer.complete:
                with contextlib.suppress(OSError):
                    xfer.save()
            if not self.released.done():
                self.released.set_result(None)

        if sink is None:
            drained()
            return
        loop = self._loop

        def then() -> None:  # on the writer thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(drained)

        sink.close(then)

    def supersede(self) -> None:
        """Another session claimed our transfer: stop writing and drop the channel."""
        self._closed = True
        if not self.finishing:
            self._release()
        if self._chan is not None:
            self._chan.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if not self.finishing:
            self._release()


def _commit(fd: int, partial: Path, final: Path) -> None:
    """Make the verified partial durable and move it into place."""
    os.fsync(fd)
    if final.is_symlink():
        raise PathEscape(f"refusing to replace a symlink: {final}")
    os.rename(partial, final)
    dfd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _SSHPolicy(asyncssh.SSHServer):
    """Connection-level policy: public keys only, no forwarding, one session kind."""

    def __init__(self, server: MigrationServer) -> None:
        self._server = server
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
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
        session = _DiskSession(self._server)
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

    def __init__(self, root: Path) -> None:
        self.root = root.resolve(strict=True)
        self._transfers: dict[str, ReceiveState] = {}
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: set[_DiskSession] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        return self._acceptor.get_port()

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int, *,
               at_most: bool = False) -> None:
        """Register a transfer (idempotent for identical arguments; progress is kept).

        With ``at_most`` the sender may declare any size up to ``apparent_size``; its first
        HELLO fixes the size for the rest of the transfer (resumes must match it).
        """
        if not transfer_id or len(transfer_id) > 253:
            raise TransferRefused(f"bad transfer id {transfer_id!r}")
        if apparent_size < 0:
            raise TransferRefused(f"bad size {apparent_size}")
        final = confine(self.root, rel_path)
        confine(self.root, rel_path + PARTIAL_SUFFIX)
        confine(self.root, rel_path + SIDECAR_SUFFIX)
        known = self._transfers.get(transfer_id)
        if known is not None:
            if (known.rel_path, known.bound, known.at_most) != (rel_path, apparent_size,
                                                                 at_most):
                raise TransferRefused(f"transfer {transfer_id} already registered differently")
            return
        for other in self._transfers.values():
            if other.final == final:
                raise TransferRefused(f"{rel_path} is the target of {other.transfer_id}")
        if final.exists() or final.is_symlink():
            raise TransferRefused(f"destination already exists: {rel_path}")
        final.parent.mkdir(parents=True, exist_ok=True)
        xfer = ReceiveState(transfer_id, rel_path, apparent_size, final, bound=apparent_size,
                         at_most=at_most, fixed=not at_most)
        xfer.save()
        self._transfers[transfer_id] = xfer

    def status(self, transfer_id: str) -> TransferStatus | None:
        """Receive state of ``transfer_id`` (``None`` if unknown)."""
        xfer = self._transfers.get(transfer_id)
        return xfer.status() if xfer is not None else None

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
            except (OSError, ValueError, KeyError, TypeError, PathEscape) as e:
                log.warning("ignoring unreadable transfer state %s: %s", sidecar, e)
                continue
            self._transfers.setdefault(xfer.transfer_id, xfer)
            found += 1
        return found

    def drop_connections(self) -> None:
        """Abort every live SSH connection (senders reconnect and resume)."""
        for conn in list(self._conns):
            conn.abort()

    def _claim(self, transfer_id: str, size: object, session: _DiskSession) -> ReceiveState:
        xfer = self._transfers.get(transfer_id)
        if xfer is None:
            raise TransferRefused(f"unknown transfer id {transfer_id!r}")
        if not xfer.fixed:
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= xfer.bound:
                raise TransferRefused(f"size {size!r} exceeds the {xfer.bound} bytes expected")
            xfer.size, xfer.fixed = size, True
            xfer.save()
        if size != xfer.size:
            raise TransferRefused(f"size {size!r} != expected {xfer.size}")
        if xfer.session is not None and xfer.session.finishing:
            raise _Busy(f"transfer {transfer_id} is being verified; retry")
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
                                 port: int = 0) -> MigrationServer:
    """Listen on ``host:port`` and serve disk uploads into ``root`` (see module docstring)."""
    server = MigrationServer(root)
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
