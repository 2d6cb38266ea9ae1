"""The sending side of a disk migration: push a (sparse) disk to a peer's migration server.

``host_key`` is the receiver's OpenSSH public key line (``Host.status.hostKey``); it is
the only key trusted for this connection (a known_hosts built from it; host key checking
is never switched off). Only data extents travel (``SEEK_DATA``/``SEEK_HOLE``; all-zero
chunks are skipped too). ``bytes_total`` is the number of data bytes of the source,
``bytes_done`` counts what the receiver holds (including what it had before a resume);
progress is reported at most ``PROGRESS_HZ`` times a second plus once at the end.

After a dropped connection the sender reconnects (``reconnect_attempts`` times, backoff
0.5 s doubling to 8 s), reads what the receiver already has and sends the rest. The
receiver's disk checksum (:mod:`vmresize.agent.transfer.sparse`) of the file it wrote must
equal the source's, which the sender computes while reading, or the send fails
(:class:`TransferChecksumMismatchError` is retried once from scratch by the receiver's reset).
Every wait is bounded: a leg that moves no byte for ``stall_timeout`` seconds (a frozen
receiver, a link that swallows packets) is dropped as :class:`ConnectionLostError` and resumed;
the receiver's verification gets that plus the time to read the disk at a slow disk's rate.
While data flows the receiver's frames are read too, so a receiver that cannot write
(its disk full or failing) ends the send at once with its reason (not retryable).
Errors are :mod:`vmresize.agent.errors` types; ``retryable`` tells the caller
whether a later attempt of the step can help. ``legs`` lists the bytes sent per leg.

Connections: a :class:`Connections` passed by the caller is shared by its sends (one step
sends several files to one peer: a handshake each cost 30-50 ms under load). A connection
is opened on first use, dropped (aborted) on any error of a leg, so the next leg opens a
new one, and closed by :meth:`Connections.close`. Without one, a send uses its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from vmresize.agent import metrics
from vmresize.agent.errors import (
    ConnectionLostError,
    TransferChecksumMismatchError,
    TransferError,
    TransferRefusedError,
)
from vmresize.agent.transfer import fastpath
from vmresize.agent.transfer.connections import Connections, known_hosts
from vmresize.agent.transfer.keys import load_client_key
from vmresize.agent.transfer.protocol import (
    CHANNEL_MAX_PKTSIZE,
    CHANNEL_WINDOW,
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
)
from vmresize.agent.transfer.source import SourceChecksum, is_zero, read_into
from vmresize.agent.transfer.sparse import READ_CHUNK, Extent, iter_extents, split_extents
from vmresize.agent.transfer.throttle import TokenBucket, host_bucket
from vmresize.agent.transfer.translate import translate

__all__ = ["Connections", "ProgressFn", "SendResult", "send_disk"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]
"""(bytes_done, bytes_total, rate in bytes/s)."""
T = TypeVar("T")
PROGRESS_HZ = 2.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0
STALL_SECONDS = 60.0
"""No byte accepted for this long: the leg is dead (keepalives alone miss a frozen peer)."""
REASON_GRACE_SECONDS = 2.0
"""How long a sender whose channel broke waits for the receiver's ERROR frame."""
VERIFY_FLOOR_BYTES_PER_SECOND = 32 * 1024 * 1024
"""The slowest read-back the receiver's checksum is allowed, to bound the wait for RESULT."""


@dataclass(frozen=True)
class SendResult:
    """Outcome of a verified send."""

    checksum: str                 # disk checksum (sparse.DiskDigest), equal on both sides
    size_bytes: int               # apparent size of the disk
    bytes_sent: int               # data bytes put on the wire, all legs together
    legs: tuple[int, ...] = ()    # data bytes sent per connection


class _Progress:
    """Rate-limited progress reporting."""

    def __init__(self, fn: ProgressFn | None, total: int) -> None:
        self._fn, self.total = fn, total
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._t0 = self._last = self._clock()
        self._base = 0
        self.done = 0

    def start_leg(self, already: int) -> None:
        self.done = self._base = already
        self._t0 = self._clock()

    def add(self, n: int) -> None:
        self.done += n
        now = self._clock()
        if self._fn is not None and now - self._last >= 1.0 / PROGRESS_HZ:
            self._last = now
            self._report(now)

    def _report(self, now: float) -> None:
        assert self._fn is not None
        rate = (self.done - self._base) / max(now - self._t0, 1e-6)
        self._fn(min(self.done, self.total), self.total, rate)

    def finish(self) -> None:
        if self._fn is not None:
            self._report(self._clock())


def _subtract(extents: list[Extent], have: list[list[int]]) -> Iterator[Extent]:
    """Parts of ``extents`` not covered by the sorted, merged ranges ``have``."""
    i = 0
    for ext in extents:
        pos, end = ext.offset, ext.offset + ext.length
        while i < len(have) and have[i][1] <= pos:
            i += 1
        j = i
        while pos < end:
            if j >= len(have) or have[j][0] >= end:
                yield Extent(pos, end - pos)
                break
            s, e = have[j]
            if s > pos:
                yield Extent(pos, s - pos)
            pos = max(pos, e)
            j += 1


def _covered(extents: list[Extent], have: list[list[int]]) -> int:
    total = sum(e.length for e in extents)
    return total - sum(e.length for e in _subtract(extents, have))


class _Leg:
    """One connection: handshake, data, verification."""

    def __init__(self, reader: asyncssh.SSHReader[bytes],
                 writer: asyncssh.SSHWriter[bytes]) -> None:
        self.reader, self.writer = reader, writer

    async def recv(self) -> tuple[int, dict[str, Any]]:
        kind, _, length = HEADER.unpack(await self.reader.readexactly(HEADER.size))
        if length > MAX_CONTROL:
            raise TransferError(f"oversized control frame from receiver ({length} bytes)")
        doc = json.loads(await self.reader.readexactly(length)) if length else {}
        if kind == ERROR:
            code, msg = doc.get("code"), doc.get("message", "")
            if code == "checksum-mismatch":
                raise TransferChecksumMismatchError(f"receiver checksum {doc.get('sha256')}: {msg}")
            if code == "busy":
                raise ConnectionLostError(f"receiver busy: {msg}")
            if code == "write-error":
                raise TransferRefusedError(f"receiver failed writing: {msg}", retryable=False)
            if str(msg).startswith("unsupported protocol version"):  # an older receiver
                msg = f"{msg} (this sender speaks {PROTOCOL_VERSION}: the agents' releases differ)"
            raise TransferRefusedError(f"receiver refused ({code}): {msg}")
        return kind, doc

    def send(self, kind: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.writer.write(HEADER.pack(kind, 0, len(body)) + body)


async def _send_leg(conn: asyncssh.SSHClientConnection, *, fd: int, size: int,
                    extents: list[Extent], transfer_id: str, source_checksum: SourceChecksum,
                    progress: _Progress, sent: list[int], stall: float,
                    buckets: tuple[TokenBucket, ...]) -> str:
    writer, reader, _ = await _bounded(conn.open_session(
        subsystem=SUBSYSTEM, encoding=None, window=CHANNEL_WINDOW,
        max_pktsize=CHANNEL_MAX_PKTSIZE), stall, "a channel")  # a reused connection may be dead
    # drain() returns only once the channel holds none of a chunk: then its buffer can be
    # read into again (the chunks go out without a copy, fastpath.write_view).
    writer.channel.set_write_buffer_limits(high=0, low=0)
    leg = _Leg(reader, writer)
    leg.send(HELLO, {"version": PROTOCOL_VERSION, "transfer_id": transfer_id, "size": size})
    kind, state = await _bounded(leg.recv(), stall, "the receiver's STATE")
    if kind != STATE:
        raise TransferError(f"unexpected frame {kind} instead of STATE")
    have = [[int(s), int(e)] for s, e in state.get("have", [])]
    if state.get("complete"):
        progress.start_leg(progress.total)
        checksum = await source_checksum.full()
        if state.get("sha256") != checksum:
            raise TransferChecksumMismatchError(f"receiver holds a completed copy with checksum "
                                   f"{state.get('sha256')}, source is {checksum}")
        return checksum
    progress.start_leg(_covered(extents, have))
    # Every extent goes out in order: hash while reading. A resumed leg skips what the
    # receiver has, so its checksum comes from a separate read of the source.
    digest = source_checksum.streaming(size, resumed=bool(have))
    loop = asyncio.get_running_loop()
    # Two reused buffers: the next chunk is read on a worker thread while this one is
    # encrypted and sent (straight from the buffer), so reads overlap encryption and no
    # 4 MiB buffer is allocated per chunk.
    bufs = (bytearray(READ_CHUNK), bytearray(READ_CHUNK))
    pieces = split_extents(_subtract(extents, have), READ_CHUNK)
    piece = next(pieces, None)
    pending = (loop.run_in_executor(None, read_into, fd, bufs[0], piece, digest)
               if piece is not None else None)
    turn = 0
    # From here the receiver speaks only to end the leg: RESULT after DONE, or ERROR early.
    incoming = asyncio.ensure_future(leg.recv())
    try:
        while piece is not None and pending is not None:
            await pending
            buf, current = bufs[turn], piece
            piece = next(pieces, None)
            turn ^= 1
            pending = (loop.run_in_executor(None, read_into, fd, bufs[turn], piece, digest)
                       if piece is not None else None)
            if not is_zero(buf, current.length):  # an all-zero chunk stays a hole there
                for bucket in buckets:  # the resize's limit, then the host's shared one
                    await bucket.take(current.length)
                writer.write(HEADER.pack(DATA, current.offset, current.length))
                fastpath.write_view(writer.channel, memoryview(buf)[: current.length])
                sent[-1] += current.length
                metrics.BYTES_SENT.inc(current.length)
                await _drain(writer, incoming, stall)
            progress.add(current.length)
        checksum = await source_checksum.result(digest)
        leg.send(DONE, {"sha256": checksum})
        verify = stall + size / VERIFY_FLOOR_BYTES_PER_SECOND
        kind, result = await _bounded(asyncio.shield(incoming), verify, "the receiver's RESULT")
    except (asyncssh.Error, OSError, EOFError) as e:  # the channel closed under us: why?
        reason = await _receiver_reason(incoming)
        if reason is not None:
            raise reason from e
        raise
    finally:  # never leave a read running on an fd the caller is about to close
        if pending is not None and not pending.done():
            await asyncio.gather(pending, return_exceptions=True)
        if not incoming.done():
            incoming.cancel()
        await asyncio.gather(incoming, return_exceptions=True)
    if kind != RESULT or result.get("sha256") != checksum:
        raise TransferChecksumMismatchError(f"receiver reported {result.get('sha256')}, "
                                       f"source {checksum}")
    writer.close()
    return checksum


async def _bounded(aw: Awaitable[T], seconds: float, what: str) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError as e:
        raise ConnectionLostError(f"no answer in {seconds:.0f}s waiting for {what}") from e


async def _receiver_reason(incoming: asyncio.Future[Any]) -> TransferError | None:
    """The receiver's ERROR, if it sent one before closing the channel (read briefly)."""
    await asyncio.wait({incoming}, timeout=REASON_GRACE_SECONDS)
    if incoming.done() and not incoming.cancelled():
        e = incoming.exception()
        if isinstance(e, TransferError):
            return e
    return None


async def _drain(writer: asyncssh.SSHWriter[bytes],
                 incoming: asyncio.Future[tuple[int, dict[str, Any]]], stall: float) -> None:
    """Wait until the channel takes more data, at most ``stall`` seconds; a frame from the
    receiver meanwhile (its ERROR) ends the leg with the receiver's reason."""
    if not incoming.done():
        drain: asyncio.Future[Any] = asyncio.ensure_future(writer.drain())
        # Retrieved whatever happens: when the send is cancelled (a superseded step) the
        # connection is torn down under this drain, which then fails with BrokenPipeError
        # that nobody would await ("Task exception was never retrieved").
        drain.add_done_callback(_retrieve)
        waiters: set[asyncio.Future[Any]] = {drain, incoming}
        try:
            done, _ = await asyncio.wait(waiters, timeout=stall,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not drain.done():
                drain.cancel()
        if drain in done:
            drain.result()
            return
        await asyncio.gather(drain, return_exceptions=True)
        if not done:
            raise ConnectionLostError(f"the receiver took no data for {stall:.0f}s")
    kind, _ = incoming.result()  # raises the receiver's ERROR
    raise TransferError(f"unexpected frame {kind} from the receiver while sending data")


async def send_disk(*, src: Path, address: str, port: int, host_key: str,
                    client_key: asyncssh.SSHKey | Path, transfer_id: str,
                    progress: ProgressFn | None = None,
                    reconnect_attempts: int = 5,
                    stall_timeout: float = STALL_SECONDS,
                    connections: Connections | None = None,
                    limit: float | None = None,
                    host: TokenBucket | None = None) -> SendResult:
    """Send ``src`` to the transfer ``transfer_id`` registered at ``address:port``, resuming
    after dropped connections; the verified result, or a :mod:`vmresize.agent.errors` type.
    ``connections``: the caller's (shared, it closes them); else this send's own.
    ``limit``: this send's own bandwidth limit in bytes/s (the resize's); ``host``: the
    bucket shared by all sends of this agent (default :func:`throttle.host_bucket`). Only
    data bytes count (what a resumed leg skips and all-zero chunks are free)."""
    known_hosts(address, port, host_key)  # a garbage key fails here, not as a retry
    key = load_client_key(client_key) if isinstance(client_key, Path) else client_key
    if connections is None:
        own = Connections()
        try:
            return await send_disk(src=src, address=address, port=port, host_key=host_key,
                                   client_key=key, transfer_id=transfer_id,
                                   progress=progress, reconnect_attempts=reconnect_attempts,
                                   stall_timeout=stall_timeout, connections=own,
                                   limit=limit, host=host)
        finally:
            await own.close()
    try:
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise TransferError(f"cannot open source disk {src}: {e}") from e
    source_checksum = SourceChecksum(src)
    try:
        size = os.fstat(fd).st_size
        try:
            extents = list(iter_extents(fd, size))
        except OSError as e:
            raise TransferError(f"cannot map extents of {src}: {e}") from e
        prog = _Progress(progress, sum(e.length for e in extents))
        buckets = ((TokenBucket(limit),) if limit is not None else ()) + (
            host if host is not None else host_bucket(),)
        sent: list[int] = []
        mismatches = 0
        attempt = 0
        while True:
            sent.append(0)
            try:
                conn = await connections.get(address, port, host_key, key)
                try:
                    checksum = await _send_leg(conn, fd=fd, size=size, extents=extents,
                                               transfer_id=transfer_id,
                                               source_checksum=source_checksum,
                                               progress=prog, sent=sent,
                                               stall=stall_timeout, buckets=buckets)
                except BaseException:  # cancelled too: what the channel holds is unknown
                    connections.drop(conn)
                    raise
                prog.finish()
                return SendResult(checksum, size, sum(sent), tuple(sent))
            except (asyncssh.Error, OSError, EOFError, TimeoutError, ValueError,
                    TransferError) as e:
                err = translate(e, context=f"send {transfer_id} to {address}:{port}")
                if isinstance(err, TransferChecksumMismatchError):
                    mismatches += 1
                    if mismatches > 1:
                        _raise(err, e)
                elif not err.retryable or attempt >= reconnect_attempts:
                    _raise(err, e)
                attempt += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1))
                log.warning("%s; retry %d/%d in %.1fs", err, attempt, reconnect_attempts,
                            delay)
                await asyncio.sleep(delay)
    finally:
        os.close(fd)
        source_checksum.cancel()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a helper future's outcome as seen (its error is reported another way)."""
    if not fut.cancelled():
        fut.exception()


def _raise(err: TransferError, cause: BaseException) -> None:
    if err is cause:
        raise err
    raise err from cause
