"""A naive, independent implementation of the disk checksum's definition (see
:mod:`vmresize.agent.transfer.sparse`), for tests to check the real one against and to
compare files with the checksums the agents report. It shares nothing with the agent's code
but the ``xxhash`` library (one-shot, over the whole message built in memory) and the
definition: ``"xxh3-128:" + hex(XXH3_128(magic || u64be(size) || u64be(offset) || block
for every non-zero 64 KiB block))``."""

from __future__ import annotations

import struct
from pathlib import Path

import xxhash

BLOCK = 64 * 1024
MAGIC = b"vmresize-disk-xxh3-128-v1\0"
PREFIX = "xxh3-128:"


def _checksum(message: bytes) -> str:
    return PREFIX + xxhash.xxh3_128_hexdigest(message)


def reference_disk_checksum(content: bytes) -> str:
    """The disk checksum of ``content``: the message is built whole, then hashed at once."""
    message = bytearray(MAGIC + struct.pack(">Q", len(content)))
    for off in range(0, len(content), BLOCK):
        block = content[off:off + BLOCK]
        if block.count(0) != len(block):
            message += struct.pack(">Q", off) + block
    return _checksum(bytes(message))


def file_disk_checksum(path: Path) -> str:
    """:func:`reference_disk_checksum` of a file's content, read a block at a time (holes
    are read as the zeros they are; nothing is skipped)."""
    size = path.stat().st_size
    h = xxhash.xxh3_128(MAGIC + struct.pack(">Q", size))
    with path.open("rb") as f:
        for off in range(0, size, BLOCK):
            block = f.read(BLOCK)
            if block.count(0) != len(block):
                h.update(struct.pack(">Q", off) + block)
    return PREFIX + h.hexdigest()
