"""One incoming disk stream: the SSH subsystem channel that writes a transfer's data.

A :class:`DiskSession` parses the frames of :mod:`vmresize.agent.transfer.protocol`, writes
DATA straight into ``<final>.partial`` through a
:class:`~vmresize.agent.transfer.sparse.SparseSink`, checkpoints received ranges into the
sidecar, and on DONE verifies the checksum and commits the file. Reading the channel pauses
for two reasons: the writer thread is behind, or the server's receive bucket (the host's
bandwidth limit, shared by all incoming sessions) is owed for data already taken; SSH flow
control then holds the sender. Which transfers exist, and which session owns one, is the
:class:`~vmresize.agent.transfer.server.MigrationServer`'s business.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from vmresize.agent import metrics
from vmresize.agent.errors import (
    PathEscapeError,
    TransferBusyError,
    TransferError,
    TransferRefusedError,
)
from vmresize.agent.paths import open_nofollow
from vmresize.agent.transfer.sparse import CHECKSUM_ALGORITHM, SparseSink, disk_checksum_fd

if TYPE_CHECKING:
    from vmresize.agent.transfer.server import MigrationServer
from vmresize.agent.transfer.protocol import (
    DATA,
    DONE,
    ERROR,
    HEADER,
    HELLO,
    MAX_CONTROL,
    PROTOCOL_VERSION,
    RESULT,
    STATE,
    SUBSYSTEM,
    ReceiveState,
)

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 1.0
WRITE_ERROR = "write-error"
"""ERROR code: the destination could not write the disk (full, failing); not retryable."""
# Bytes queued for the writer thread before we stop reading the channel (SSH flow control
# then holds the sender); reading resumes below the low mark.
PENDING_HIGH, PENDING_LOW = 8 * 1024 * 1024, 2 * 1024 * 1024
MIN_THROTTLE_SECONDS = 0.005
"""A debt to the receive bucket shorter than this does not pause reading (a timer per
packet would cost more than it holds back at a high limit); it stays owed, so the next
packet's wait includes it and the average rate is still the limit."""


class DiskSession(asyncssh.SSHServerSession[bytes]):
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
        self._paused = False             # the writer thread is behind
        self._throttled: asyncio.TimerHandle | None = None  # owing the receive bucket
        self._last_save = 0.0
        self._closed = False
        self._releasing = False
        self.finishing = False
        self._declared: str | None = None  # DONE's checksum, until the finish starts
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
                if self.finishing:  # DONE is the last frame; more is a broken sender
                    raise ValueError(f"{len(view)} bytes after DONE")
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
            if self._declared is not None and not self._closed:
                self._start_finish()
        except TransferBusyError as e:
            self._fail("busy", str(e))
        except (TransferRefusedError, PathEscapeError) as e:
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
        if not isinstance(payload, dict):
            raise ValueError(f"control frame {self._kind} must be a JSON object")
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
            raise TransferRefusedError(f"unsupported protocol version {doc.get('version')!r}: this "
                                  f"receiver speaks {PROTOCOL_VERSION} (disk checksum "
                                  f"{CHECKSUM_ALGORITHM}); run one agent release on both hosts")
        tid, size = doc.get("transfer_id"), doc.get("size")
        if not isinstance(tid, str):
            raise TransferRefusedError(f"transfer_id must be a string, not {tid!r}")
        # JSON has one number type: 4096.0 == 4096 in Python, but no file has a float size.
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TransferRefusedError(f"size must be a non-negative integer, not {size!r}")
        xfer = self._server._claim(tid, size, self)
        self._xfer = xfer
        if xfer.complete:
            self._send(STATE, {"complete": True, "sha256": xfer.checksum, "have": xfer.ranges})
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

        done: collections.deque[tuple[int, int]] = collections.deque()

        def written(offset: int, length: int) -> None:  # on the writer thread
            # One wake-up of the loop per batch, not per packet (each costs a self-pipe
            # write and a loop turn). Safe without a lock: append/popleft are atomic and
            # the loop drains until empty, so an append to an empty deque always schedules.
            done.append((offset, length))
            if len(done) == 1:
                with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                    loop.call_soon_threadsafe(self._written, xfer, done)

        def failed(e: OSError) -> None:  # on the writer thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._write_failed, xfer, e)

        # A fresh transfer arrives in order, so the checksum can be streamed as it is
        # written; after a resume the receiver re-reads the file instead.
        self._sink = SparseSink(fd, xfer.size, stream_hash=fresh, on_written=written,
                                on_error=failed)
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
        bucket = self._server.bucket
        if bucket.rate is not None:  # unlimited: not even the bookkeeping
            # Taken after the bytes arrived (a callback cannot wait); the pause until the
            # debt is paid keeps the channel's window closed, which slows the sender.
            wait = bucket.delay(n)
            if wait >= MIN_THROTTLE_SECONDS and self._throttled is None:
                self._throttled = self._loop.call_later(wait, self._unthrottle)
                self._chan.pause_reading()

    def _unthrottle(self) -> None:
        """On the loop: the receive bucket's debt is paid."""
        self._throttled = None
        self._resume()

    def _resume(self) -> None:
        """Read the channel again unless another reason to pause still holds."""
        if not (self._paused or self._throttled is not None or self._closed
                or self.finishing or self._chan is None):
            self._chan.resume_reading()

    def _written(self, xfer: ReceiveState, done: collections.deque[tuple[int, int]]) -> None:
        """On the loop: the ranges in ``done`` are in the partial file."""
        while done:
            offset, length = done[0]
            xfer.add_range(offset, offset + length)
            metrics.BYTES_RECEIVED.inc(length)
            self._pending -= length
            done.popleft()  # only now: a writer seeing it empty schedules the next batch
        if self._paused and self._pending < PENDING_LOW and not self._closed \
                and not self.finishing:
            self._paused = False
            self._resume()
        now = self._loop.time()
        if now - self._last_save >= CHECKPOINT_SECONDS:
            self._last_save = now
            with contextlib.suppress(OSError):
                xfer.save()

    def _write_failed(self, xfer: ReceiveState, e: OSError) -> None:
        """On the loop: the disk refused a write (ENOSPC, EIO). Without this the writes
        queued behind it never drain, reading stays paused and the sender hangs forever
        with the VM off; instead the sender is told why and the step fails."""
        reason = os.strerror(e.errno) if e.errno else str(e)
        self._fail(WRITE_ERROR, f"cannot write {xfer.rel_path} on the destination: {reason} "
                                f"({errno.errorcode.get(e.errno or 0, 'errno ' + str(e.errno))})")

    def _done(self, doc: dict[str, Any]) -> None:
        if self._xfer is None or self.finishing:
            raise ValueError("DONE before HELLO")
        self.finishing = True
        assert self._chan is not None
        self._chan.pause_reading()
        # Verified only once the rest of this packet is known to be empty (data_received):
        # bytes after DONE refuse the transfer before anything is committed.
        self._declared = str(doc.get("sha256"))

    def _start_finish(self) -> None:
        """Verify and commit in a task, now that DONE was the last thing received."""
        declared, self._declared = self._declared, None
        assert declared is not None
        task = asyncio.get_running_loop().create_task(self._finish(declared))
        self._server._tasks.add(task)
        task.add_done_callback(self._server._tasks.discard)

    async def _finish(self, declared: str) -> None:
        xfer = self._xfer
        assert xfer is not None
        try:
            if xfer.complete:
                ok, actual = xfer.checksum == declared, xfer.checksum
            else:
                sink = self._sink
                assert sink is not None
                streamed = await asyncio.wrap_future(sink.digest())
                actual = streamed or await asyncio.wrap_future(sink.call(disk_checksum_fd))
                ok = actual == declared
                if ok:  # commit even if the sender vanished: it will see STATE complete
                    partial, final = xfer.partial, xfer.final
                    await asyncio.wrap_future(sink.call(lambda fd: commit(fd, partial, final)))
                    xfer.complete, xfer.checksum = True, actual
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
                               "message": "receiver checksum differs from the sender's"})
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
        if self._throttled is not None:
            self._throttled.cancel()
            self._throttled = None
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


def commit(fd: int, partial: Path, final: Path) -> None:
    """Make the verified partial durable and move it into place."""
    os.fsync(fd)
    if final.is_symlink():
        raise PathEscapeError(f"refusing to replace a symlink: {final}")
    os.rename(partial, final)
    dfd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


