"""Reading the source disk for a send: chunks into reused buffers, all-zero detection, and
the source's disk checksum (:mod:`vmresize.agent.transfer.sparse`).

The checksum is streamed while a leg reads every extent in order (the usual first leg), so
the source is read once; a resumed leg skips what the receiver has, so it needs one
separate read of the data extents, started when that leg begins so that it overlaps the
sending. The source is powered off and never changes during a send, so a checksum once
computed holds for every later leg.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from vmresize.agent.errors import TransferError
from vmresize.agent.transfer.sparse import READ_CHUNK, DiskDigest, Extent, disk_checksum

__all__ = ["SourceChecksum", "is_zero", "read_into"]

_ZEROS = bytes(READ_CHUNK)


def is_zero(buf: bytearray, n: int) -> bool:
    """Whether ``buf[:n]`` is all zeros, at memcmp speed (bytes-like compare, no memoryview)."""
    if n == READ_CHUNK:
        return buf == _ZEROS
    return buf[:n] == _ZEROS[:n]


def read_into(fd: int, buf: bytearray, piece: Extent, digest: DiskDigest | None) -> int:
    """Fill ``buf[:piece.length]`` from the source and feed it to ``digest`` (on a worker
    thread: the hash releases the GIL, so hashing overlaps the encryption of the last chunk)."""
    view = memoryview(buf)[: piece.length]
    done = 0
    while done < piece.length:
        n = os.preadv(fd, [view[done:]], piece.offset + done)
        if n == 0:
            raise TransferError(f"source shrank while reading at {piece.offset + done}")
        done += n
    if digest is not None:
        digest.update(piece.offset, view)
    return done


class SourceChecksum:
    """The source's disk checksum for one send, whichever leg computes it (module docstring)."""

    def __init__(self, src: Path) -> None:
        self._src = src
        self.value: str | None = None  # set by the leg that streamed it
        self._full: asyncio.Future[str] | None = None

    def streaming(self, size: int, resumed: bool) -> DiskDigest | None:
        """A digest for a leg to feed while it reads every extent in order, or None (the
        leg is resumed, or the value is known): then :meth:`full` is started now."""
        if not resumed and self.value is None:
            return DiskDigest(size)
        self.full()
        return None

    def full(self) -> asyncio.Future[str]:
        """The checksum: the streamed value, else one read of the source on a worker thread."""
        if self._full is None:
            if self.value is not None:
                self._full = asyncio.get_running_loop().create_future()
                self._full.set_result(self.value)
            else:
                self._full = asyncio.ensure_future(asyncio.to_thread(disk_checksum, self._src))
        return self._full

    async def result(self, digest: DiskDigest | None) -> str:
        """After a leg read everything it had to: the checksum (from ``digest`` if it
        streamed one)."""
        if digest is not None:
            self.value = digest.hexdigest()
            return self.value
        return await self.full()

    def cancel(self) -> None:
        """Stop a separate read still running (the send is over)."""
        if self._full is not None and not self._full.done():
            self._full.cancel()
