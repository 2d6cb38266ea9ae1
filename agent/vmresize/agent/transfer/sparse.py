"""Sparse-file primitives: data extents, whole-file sha256, sizes.

``SparseSink`` owns ``fd`` from then on: a writer thread ``pwrite``-s queued data in order
(holes are simply never written) and, when ``stream_hash`` is set, hands what it wrote to a
hasher thread that feeds zeros for the gaps, so the sha256 of the whole image is ready right
after the last write instead of after a second pass. Both threads release the GIL in the
syscalls and in hashlib, so receiving, writing and hashing overlap.

Extents come from ``lseek(SEEK_DATA/SEEK_HOLE)``. Where the filesystem does not support
them (``EINVAL``/``EOPNOTSUPP``), the whole file is one data extent: correct, just not sparse.
Holes are hashed by feeding a shared zero buffer, never by reading them from disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "Extent", "SparseSink", "allocated_bytes", "apparent_size", "iter_extents", "sha256_fd",
    "sha256_file", "split_extents",
]

T = TypeVar("T")

# 4 MiB reads: large enough that hashlib releases the GIL and syscalls are amortised,
# small enough to keep memory flat.
READ_CHUNK = 4 * 1024 * 1024
_ZEROS = bytes(READ_CHUNK)
HASH_BACKLOG = 32  # writes (SSH packets of <= 256 KiB) waiting for the hasher: <= 8 MiB


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


def _hash_zeros(h: hashlib._Hash, n: int) -> None:
    view = memoryview(_ZEROS)
    while n > 0:
        k = min(n, READ_CHUNK)
        h.update(view[:k])
        n -= k


def sha256_fd(fd: int) -> str:
    """sha256 hex digest of the whole open file (holes hashed as zeros without reading)."""
    size = os.fstat(fd).st_size
    h = hashlib.sha256()
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    pos = 0
    for ext in iter_extents(fd, size):
        _hash_zeros(h, ext.offset - pos)
        off, end = ext.offset, ext.offset + ext.length
        while off < end:
            n = os.preadv(fd, [view[: min(READ_CHUNK, end - off)]], off)
            if n == 0:  # file shrank under us: hash what the size promised as zeros
                break
            h.update(view[:n])
            off += n
        _hash_zeros(h, end - off)
        pos = end
    _hash_zeros(h, size - pos)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 hex digest of ``path``, equal to ``sha256sum``'s, reading only data extents."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sha256_fd(fd)
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
        # Bounded, so a slow hasher stalls the writer (and through it the sender)
        # instead of buffering the whole image in memory.
        self._hashes: queue.Queue[Any] | None = (
            queue.Queue(maxsize=HASH_BACKLOG) if stream_hash else None)
        self._writer = threading.Thread(target=self._write_loop, name="sparse-writer",
                                        daemon=True)
        self._writer.start()
        if self._hashes is not None:
            threading.Thread(target=self._hash_loop, args=(self._hashes,),
                             name="sparse-hasher", daemon=True).start()

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Queue ``data`` for ``[offset, offset + len)``; the buffer must not change."""
        self._writes.put((offset, data))

    def call(self, fn: Callable[[int], T]) -> Future[T]:
        """Run ``fn(fd)`` on the writer thread after every write queued so far."""
        fut: Future[T] = Future()
        self._writes.put(_Call(fn, fut))
        return fut

    def digest(self) -> Future[str | None]:
        """sha256 of the image after the queued writes; ``None`` if not streamed in order."""
        fut: Future[str | None] = Future()
        if self._hashes is None:
            fut.set_result(None)
        else:
            self._writes.put(_Digest(fut))
        return fut

    def close(self, then: Callable[[], None] | None = None) -> None:
        """Finish the queued work, close the fd, then call ``then`` (on the writer thread)."""
        self._writes.put((_STOP, then))

    def _write_loop(self) -> None:
        failed: OSError | None = None
        while True:
            item = self._writes.get()
            if isinstance(item, _Call):
                try:
                    item.fut.set_result(item.fn(self._fd))
                except BaseException as e:  # handed to the waiter, never lost
                    item.fut.set_exception(e)
                continue
            if isinstance(item, _Digest):
                if self._hashes is not None:
                    self._hashes.put(item)
                continue
            offset, data = item
            if offset is _STOP:
                if self._hashes is not None:
                    self._hashes.put(_STOP)
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
                if self._hashes is not None:
                    self._hashes.put(None)  # poison: the stream no longer matches the file
                if self._on_error is not None:  # a full or failing disk ends the transfer
                    self._on_error(e)
                continue
            self._on_written(offset, len(view))
            if self._hashes is not None:
                self._hashes.put((offset, view))

    def _hash_loop(self, items: queue.Queue[Any]) -> None:
        h: Any = hashlib.sha256()
        pos = 0
        while True:
            item = items.get()
            if item is _STOP:
                return
            if isinstance(item, _Digest):
                if h is None or pos > self._size:
                    item.fut.set_result(None)
                else:
                    _hash_zeros(h, self._size - pos)
                    item.fut.set_result(h.hexdigest())
                    h = None  # the stream is finished
                continue
            if item is None or h is None:
                h = None
                continue
            offset, view = item
            if offset < pos:  # out of order: only a read-back can tell now
                h = None
                continue
            _hash_zeros(h, offset - pos)
            h.update(view)
            pos = offset + len(view)
