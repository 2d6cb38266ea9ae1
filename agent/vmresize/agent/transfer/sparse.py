"""Sparse-file primitives: data extents, the disk checksum, sizes, a threaded sparse writer.

The disk checksum (the one definition; MigrateDisk reports it, the receiver and Finish check
it) is an XXH3-128 over the disk's *content*, laid out so that zeros cost nothing, written
with the algorithm in front (``CHECKSUM_PREFIX``) so a stored value says what it is::

    "xxh3-128:" + hex( XXH3_128( b"vmresize-disk-xxh3-128-v1\0" || u64be(size)
            || for every DIGEST_BLOCK-aligned block [i*B, min((i+1)*B, size)) that holds a
               non-zero byte, in order: u64be(i*B) || the block's bytes ) )

It depends only on the apparent size and the bytes (holes read as zeros), never on the
hole layout: a hole and explicit zeros hash alike, so a destination whose holes differ from
the source's (the sender skips all-zero chunks; filesystems round extents) still verifies,
and any changed byte or size changes it. Being content-only it keeps invariant 2's meaning.
Holes are never read or hashed (they are zero blocks), so a 1 GiB disk holding 64 MiB costs
64 MiB of hashing, and the sender and receiver compute it in-stream (:class:`DiskDigest`
takes data in increasing offset order, gaps are zeros).

Why a non-cryptographic hash: the checksum guards against corruption (a bug, a torn or lost
write, bit rot between send and Finish), not against an adversary. The bytes travel over SSH,
which authenticates the peer (pinned host keys) and protects integrity (AES-GCM); nobody
but the guest chooses the content, and the guest hashes the same bytes on both ends, so a
crafted collision could only make its own copy differ from itself. Against accidental
change a 128-bit XXH3 misses one in 2^128, and it costs about 0.06 CPU-s per GiB here where
sha256 cost 0.63 (both ends hash every data byte once, on 2 shared cores). A change of the
definition is a new prefix, magic and transfer protocol version (``protocol.py``).

``SparseSink`` owns ``fd`` from then on: a writer thread ``pwrite``-s queued data in order
(holes are simply never written) and, when ``stream_hash`` is set, hashes what it wrote right
after writing it (still in the CPU cache), so the checksum of the whole image is ready right
after the last write instead of after a second pass. The thread releases the GIL in the
syscalls and in the hash, so receiving overlaps writing and hashing. (A separate hasher
thread paid off with sha256; XXH3 costs 0.06 s per GiB, less than the thread hand-off of
every packet cost in wake-ups.)

Extents come from ``lseek(SEEK_DATA/SEEK_HOLE)``. Where the filesystem does not support
them (``EINVAL``/``EOPNOTSUPP``), the whole file is one data extent: correct, just not sparse.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import xxhash

__all__ = [
    "CHECKSUM_ALGORITHM", "CHECKSUM_PREFIX", "DIGEST_BLOCK", "DiskDigest", "Extent", "SparseSink",
    "allocated_bytes", "apparent_size", "disk_checksum", "disk_checksum_fd", "iter_extents",
    "split_extents",
]

T = TypeVar("T")

# 4 MiB reads: large enough that the hash releases the GIL and syscalls are amortised,
# small enough to keep memory flat.
READ_CHUNK = 4 * 1024 * 1024
DIGEST_BLOCK = 64 * 1024  # a qcow2 cluster: zero clusters drop out of the checksum
CHECKSUM_ALGORITHM = "xxh3-128"
CHECKSUM_PREFIX = CHECKSUM_ALGORITHM + ":"  # every checksum string starts with the algorithm
_DIGEST_MAGIC = b"vmresize-disk-xxh3-128-v1\0"
_U64 = struct.Struct(">Q")
_ZERO_BLOCK = bytes(DIGEST_BLOCK)
# The writer starts the writeback of what it wrote every WRITEBACK_BYTES (sync_file_range,
# SYNC_FILE_RANGE_WRITE: it does not wait for it), so the disk writes during the copy and
# the fsync before the rename finds little left (it took 0.2-0.25 s for 1 GiB here).
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _writeback_starter() -> Callable[[int], None]:
    """``start(fd)``: begin writing the file's dirty pages back; a no-op where libc has no
    ``sync_file_range``. Errors are ignored: the fsync before the rename reports them."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return lambda fd: None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int

    def start(fd: int) -> None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # 0, 0: the whole file; ctypes drops the GIL
    return start


_start_writeback = _writeback_starter()


class Extent(NamedTuple):
    """A run of data bytes ``[offset, offset + length)``."""

    offset: int
    length: int


def iter_extents(fd: int, size: int) -> Iterator[Extent]:
    """Yield the data extents of the open file ``fd`` of apparent size ``size``, in order."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after pos: the rest is a hole
                return
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP) and pos == 0:
                yield Extent(0, size)  # no SEEK_DATA support: everything is data
                return
            raise
        if start >= size:
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        end = min(end, size)
        yield Extent(start, end - start)
        pos = end


def split_extents(extents: Iterable[Extent], chunk: int) -> Iterator[Extent]:
    """Split extents into pieces of at most ``chunk`` bytes."""
    for ext in extents:
        off, end = ext.offset, ext.offset + ext.length
        while off < end:
            n = min(chunk, end - off)
            yield Extent(off, n)
            off += n


class DiskDigest:
    """The disk checksum (module docstring) computed from data fed in increasing offset
    order; whatever is not fed is zeros. Not thread-safe; sequential use from different
    threads is fine."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._h = xxhash.xxh3_128(_DIGEST_MAGIC + _U64.pack(size))
        self._pos = 0                          # everything below is accounted for
        self._part = bytearray(DIGEST_BLOCK)   # a block fed piecewise, zeros elsewhere
        self._part_at = -1                     # its offset, -1 if none

    def update(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Feed ``data`` at ``offset``; raise ``ValueError`` if out of order or too far."""
        view = memoryview(data).cast("B")
        if offset < self._pos or offset + len(view) > self.size:
            raise ValueError(f"digest fed [{offset}, +{len(view)}) after {self._pos} "
                             f"(size {self.size})")
        while view:
            block = offset - offset % DIGEST_BLOCK
            blen = min(DIGEST_BLOCK, self.size - block)
            if self._part_at not in (-1, block):
                self._flush_part()
            r = offset - block
            if r == 0 and len(view) >= blen and self._part_at == -1:
                self._block(block, view[:blen])  # the common case: a whole block, no copy
                n = blen
            else:
                n = min(len(view), blen - r)
                self._part_at = block
                self._part[r:r + n] = view[:n]
                if r + n == blen:
                    self._flush_part()
            offset += n
            view = view[n:]
        self._pos = offset

    def _block(self, offset: int, view: memoryview) -> None:
        if not _ZERO_BLOCK.startswith(view):  # memcmp; memoryview == would go bytewise
            self._h.update(_U64.pack(offset))
            self._h.update(view)

    def _flush_part(self) -> None:
        block, self._part_at = self._part_at, -1
        blen = min(DIGEST_BLOCK, self.size - block)
        self._block(block, memoryview(self._part)[:blen])
        self._part[:] = _ZERO_BLOCK

    def hexdigest(self) -> str:
        """The checksum of everything fed (the rest zeros), ``CHECKSUM_PREFIX`` first; the
        digest stays usable."""
        if self._part_at != -1:
            self._flush_part()
        return CHECKSUM_PREFIX + self._h.hexdigest()


def disk_checksum_fd(fd: int, progress: Callable[[int], None] | None = None) -> str:
    """The disk checksum of the open file, reading only its data extents; ``progress``
    is told the bytes of each read."""
    size = os.fstat(fd).st_size
    digest = DiskDigest(size)
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    for ext in iter_extents(fd, size):
        off, end = ext.offset, ext.offset + ext.length
        while off < end:
            n = os.preadv(fd, [view[: min(READ_CHUNK, end - off)]], off)
            if n == 0:  # file shrank under us: the rest counts as zeros
                break
            digest.update(off, view[:n])
            off += n
            if progress is not None:
                progress(n)
    return digest.hexdigest()


def disk_checksum(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The disk checksum (module docstring) of ``path``; ``progress`` as for
    :func:`disk_checksum_fd`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return disk_checksum_fd(fd, progress)
    finally:
        os.close(fd)


def apparent_size(path: Path) -> int:
    """The file's apparent size (``st_size``)."""
    return path.stat().st_size


def allocated_bytes(path: Path) -> int:
    """Bytes actually allocated on disk (``st_blocks * 512``)."""
    return path.stat().st_blocks * 512


class _Call:
    """A function to run on the writer thread, in order with the writes."""

    def __init__(self, fn: Callable[[int], Any], fut: Future[Any]) -> None:
        self.fn, self.fut = fn, fut


class _Digest:
    """Marker: finish the streaming hash at ``size`` and resolve ``fut``."""

    def __init__(self, fut: Future[str | None]) -> None:
        self.fut = fut


_STOP = object()


class SparseSink:
    """Background in-order writer of one sparse image; it owns ``fd`` from now on and calls
    ``on_written(offset, length)`` on its writer thread (see the module docstring)."""

    def __init__(self, fd: int, size: int, *, stream_hash: bool,
                 on_written: Callable[[int, int], None],
                 on_error: Callable[[OSError], None] | None = None) -> None:
        self._fd, self._size = fd, size
        self._on_written = on_written  # called on the writer thread: (offset, length)
        self._on_error = on_error  # called once on the writer thread: the first write error
        self._writes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stream_hash = stream_hash
        self._writer = threading.Thread(target=self._write_loop, name="sparse-writer",
                                        daemon=True)
        self._writer.start()

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Queue ``data`` for ``[offset, offset + len)``; the buffer must not change."""
        self._writes.put((offset, data))

    def call(self, fn: Callable[[int], T]) -> Future[T]:
        """Run ``fn(fd)`` on the writer thread after every write queued so far."""
        fut: Future[T] = Future()
        self._writes.put(_Call(fn, fut))
        return fut

    def digest(self) -> Future[str | None]:
        """The disk checksum of the image after the queued writes; ``None`` if not streamed
        in order."""
        fut: Future[str | None] = Future()
        if not self._stream_hash:
            fut.set_result(None)
        else:
            self._writes.put(_Digest(fut))
        return fut

    def close(self, then: Callable[[], None] | None = None) -> None:
        """Finish the queued work, close the fd, then call ``then`` (on the writer thread)."""
        self._writes.put((_STOP, then))

    def _write_loop(self) -> None:
        failed: OSError | None = None
        unflushed = 0  # bytes written since the writeback was last started
        # None once the stream no longer matches the file (a failed or out-of-order write)
        digest: DiskDigest | None = DiskDigest(self._size) if self._stream_hash else None
        while True:
            item = self._writes.get()
            if isinstance(item, _Call):
                try:
                    item.fut.set_result(item.fn(self._fd))
                except BaseException as e:  # handed to the waiter, never lost
                    item.fut.set_exception(e)
                continue
            if isinstance(item, _Digest):
                item.fut.set_result(digest.hexdigest() if digest is not None else None)
                digest = None  # the stream is finished
                continue
            offset, data = item
            if offset is _STOP:
                os.close(self._fd)
                if data is not None:
                    data()
                return
            if failed is not None:
                continue  # a failed write is reported once; the digest will be None
            view = memoryview(data)
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as e:
                failed = e
                digest = None  # the stream no longer matches the file
                if self._on_error is not None:  # a full or failing disk ends the transfer
                    self._on_error(e)
                continue
            self._on_written(offset, len(view))
            if digest is not None:
                try:
                    digest.update(offset, view)
                except ValueError:  # out of order: only a read-back can tell now
                    digest = None
            unflushed += len(view)
            if unflushed >= WRITEBACK_BYTES:
                unflushed = 0
                _start_writeback(self._fd)
