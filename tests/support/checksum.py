"""A naive, independent implementation of the disk checksum's definition (see
:mod:`vmresize.agent.transfer.sparse`), for tests to check the real one against and to
compare files with the checksums the agents report."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

BLOCK = 64 * 1024
MAGIC = b"vmresize-disk-sha256-v1\0"


def reference_disk_checksum(content: bytes) -> str:
    """sha256(magic || u64be(size) || u64be(offset) || block, for every non-zero block)."""
    h = hashlib.sha256(MAGIC + struct.pack(">Q", len(content)))
    for off in range(0, len(content), BLOCK):
        block = content[off:off + BLOCK]
        if block.count(0) != len(block):
            h.update(struct.pack(">Q", off) + block)
    return h.hexdigest()


def file_disk_checksum(path: Path) -> str:
    """:func:`reference_disk_checksum` of a file's content, read a block at a time (holes
    are read as the zeros they are; nothing is skipped)."""
    size = path.stat().st_size
    h = hashlib.sha256(MAGIC + struct.pack(">Q", size))
    with path.open("rb") as f:
        for off in range(0, size, BLOCK):
            block = f.read(BLOCK)
            if block.count(0) != len(block):
                h.update(struct.pack(">Q", off) + block)
    return h.hexdigest()
