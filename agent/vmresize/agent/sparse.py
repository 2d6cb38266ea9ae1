"""Sparse-file primitives: data extents, whole-file sha256, sizes.

Public API::

    Extent(offset: int, length: int)                    # a NamedTuple
    iter_extents(fd: int, size: int) -> Iterator[Extent] # data extents, in order
    split_extents(extents, chunk: int) -> Iterator[Extent]
    sha256_file(path: Path) -> str                      # == `sha256sum`, holes hashed as zeros
    apparent_size(path: Path) -> int                    # st_size
    allocated_bytes(path: Path) -> int                  # st_blocks * 512

Extents come from ``lseek(SEEK_DATA/SEEK_HOLE)``. Where the filesystem does not support
them (``EINVAL``/``EOPNOTSUPP``), the whole file is one data extent: correct, just not sparse.
Holes are hashed by feeding a shared zero buffer, never by reading them from disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "Extent", "allocated_bytes", "apparent_size", "iter_extents", "sha256_file",
    "split_extents",
]

# 4 MiB reads: large enough that hashlib releases the GIL and syscalls are amortised,
# small enough to keep memory flat.
READ_CHUNK = 4 * 1024 * 1024
_ZEROS = bytes(READ_CHUNK)


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
