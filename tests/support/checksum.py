"""A naive, independent implementation of the disk checksum's definition (see
:mod:`vmresize.agent.transfer.sparse`), for tests to check the real one against."""

from __future__ import annotations

import hashlib
import struct

BLOCK = 64 * 1024


def reference_disk_checksum(content: bytes) -> str:
    """sha256(magic || u64be(size) || u64be(offset) || block, for every non-zero block)."""
    h = hashlib.sha256(b"vmresize-disk-sha256-v1\0" + struct.pack(">Q", len(content)))
    for off in range(0, len(content), BLOCK):
        block = content[off:off + BLOCK]
        if block.count(0) != len(block):
            h.update(struct.pack(">Q", off) + block)
    return h.hexdigest()
