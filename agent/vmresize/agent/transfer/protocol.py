"""The disk-transfer wire protocol and the receiver's persistent state of one transfer.

Shared by :mod:`~vmresize.agent.transfer.server` (receiving) and
:mod:`~vmresize.agent.transfer.client` (sending).

Wire protocol, spoken inside the SSH subsystem ``SUBSYSTEM`` (all integers big-endian):
every frame starts with ``HEADER = struct(">BQI")`` = (kind, offset, length) followed by
``length`` bytes. ``HELLO`` {version, transfer_id, size} and ``DONE`` {sha256} go from the
sender; ``STATE`` {complete, have: [[start, end], ...], sha256?}, ``RESULT`` {ok, sha256}
and ``ERROR`` {code, message} from the receiver; ``DATA`` carries raw bytes for
``[offset, offset + length)``. A sender sends HELLO, reads STATE, sends DATA for what the
receiver does not ``have``, then DONE, and reads RESULT or ERROR. Every ``sha256`` field
holds the disk checksum of :mod:`vmresize.agent.transfer.sparse` (``xxh3-128:<hex>``, over
the content; the field keeps its old name). Both ends must speak the same version: a
receiver refuses any other in HELLO (``refused``, not retryable), so two agents of releases
with different checksums stop with that message instead of a checksum mismatch.

Receiver state: :class:`ReceiveState` is persisted as JSON in ``<final>.xfer`` next to
``<final>.partial``, written atomically (tmp file + rename, never following symlinks).
"""

from __future__ import annotations

import bisect
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vmresize.agent.paths import confine, open_nofollow

__all__ = [
    "CHANNEL_MAX_PKTSIZE", "CHANNEL_WINDOW", "DATA", "DONE", "ENCRYPTION_ALGS", "ERROR",
    "HEADER", "HELLO", "MAX_CONTROL", "PARTIAL_SUFFIX", "PROTOCOL_VERSION", "RESULT",
    "SIDECAR_SUFFIX", "SOCKET_READ", "STATE", "SUBSYSTEM", "ReceiveState", "ReceiverSession",
    "TransferStatus",
]

SUBSYSTEM = "vmresize-disk@vmresize.io"
# 1: sha256sum's value; 2: sparse.DiskDigest over sha256; 3: DiskDigest over XXH3-128,
# written "xxh3-128:<hex>"
PROTOCOL_VERSION = 3
HEADER = struct.Struct(">BQI")
HELLO, STATE, DATA, DONE, RESULT, ERROR = 1, 2, 3, 4, 5, 6
MAX_CONTROL = 1 << 20  # a JSON control frame is tiny; cap what we buffer for one
# Channel tuning: 256 KiB packets and a 16 MiB window cut per-packet Python overhead
# (asyncssh defaults are 32 KiB / 2 MiB, sized for interactive use). 1 MiB packets with a
# 32 MiB window measured worse (receiver CPU +20-35% for 1 GiB): asyncio reads the socket
# 256 KiB at a time, so a larger packet is joined from more pieces before it is decrypted.
CHANNEL_WINDOW = 16 * 1024 * 1024
CHANNEL_MAX_PKTSIZE = 256 * 1024
# The receiver reads its socket up to 1 MiB at a time (asyncio's default is 256 KiB, less than
# one packet, so nearly every packet straddled two reads and was joined: a copy of all data).
# Measured for 1 GiB: receiver CPU 1.21-1.59 s -> 1.12-1.22 s (4 MiB: no better).
SOCKET_READ = 1024 * 1024
# Preferred ciphers: AES-GCM runs on AES-NI through `cryptography`.
ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                   "chacha20-poly1305@openssh.com")
PARTIAL_SUFFIX = ".partial"
SIDECAR_SUFFIX = ".xfer"


class ReceiverSession(Protocol):
    """What the state needs of the session currently receiving it."""

    finishing: bool

    def supersede(self) -> None:
        """Another session (or ``forget``/``close``) takes the transfer over: stop writing."""
        ...


@dataclass(frozen=True)
class TransferStatus:
    """What the receiver knows about one transfer."""

    transfer_id: str
    rel_path: str
    size: int
    received: int          # data bytes held (sum of received ranges)
    complete: bool         # final file in place and verified
    checksum: str | None   # verified disk checksum of the final file when complete


@dataclass
class ReceiveState:
    """Mutable receive state of one registered transfer (shared by its sessions)."""

    transfer_id: str
    rel_path: str
    size: int
    final: Path
    ranges: list[list[int]] = field(default_factory=list)  # sorted, merged [start, end)
    complete: bool = False
    checksum: str | None = None   # the disk checksum (``sha256`` in the state file)
    bound: int = -1          # the size given to expect() (an upper bound if at_most)
    at_most: bool = False
    fixed: bool = True       # False until the first HELLO fixes ``size`` (at_most only)
    promised: int | None = None  # at_most: bytes counted as promised (None: the bound)
    session: ReceiverSession | None = None

    @property
    def partial(self) -> Path:
        """``<final>.partial``: the file being written until the checksum matches."""
        return self.final.with_name(self.final.name + PARTIAL_SUFFIX)

    @property
    def sidecar(self) -> Path:
        """``<final>.xfer``: where this state is saved as JSON."""
        return self.final.with_name(self.final.name + SIDECAR_SUFFIX)

    def pending(self) -> int:
        """Bytes this transfer may still write, as Prepare counted them, less what it holds:
        an ``at_most`` one given a promise counts that (a pre-copy overlay's reserve, not
        the bound it may not exceed), any other its size (the bound until HELLO fixed it)."""
        if self.complete:
            return 0
        if self.at_most and self.promised is not None:
            return max(0, self.promised - self.received())
        return max(0, (self.size if self.fixed else self.bound) - self.received())

    def received(self) -> int:
        """Data bytes held: the total length of the received ranges."""
        return sum(end - start for start, end in self.ranges)

    def add_range(self, start: int, end: int) -> None:
        """Record ``[start, end)`` as received, merging it with overlapping or adjacent ranges."""
        r = self.ranges
        if r and r[-1][0] <= start <= r[-1][1]:  # the common case: in-order append
            r[-1][1] = max(r[-1][1], end)
            return
        i = bisect.bisect_left(r, [start, end])
        r.insert(i, [start, end])
        merged: list[list[int]] = []
        for s, e in r:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.ranges = merged

    def save(self) -> None:
        """Write the sidecar atomically (tmp + rename in the same directory)."""
        doc = {"version": PROTOCOL_VERSION, "transfer_id": self.transfer_id,
               "rel_path": self.rel_path, "size": self.size, "ranges": self.ranges,
               "complete": self.complete, "sha256": self.checksum, "bound": self.bound,
               "at_most": self.at_most, "fixed": self.fixed, "promised": self.promised}
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, json.dumps(doc).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.sidecar)

    def status(self) -> TransferStatus:
        """A frozen snapshot for callers outside the server."""
        return TransferStatus(self.transfer_id, self.rel_path, self.size, self.received(),
                              self.complete, self.checksum)

    @classmethod
    def load(cls, root: Path, sidecar: Path) -> ReceiveState | None:
        """Read a sidecar found under ``root``; ``None`` if it is not where it claims."""
        doc = json.loads(sidecar.read_text())
        rel = str(doc["rel_path"])
        final = confine(root, rel)
        if final.with_name(final.name + SIDECAR_SUFFIX) != sidecar.resolve():
            return None
        size = int(doc["size"])
        return cls(str(doc["transfer_id"]), rel, size, final,
                   [[int(s), int(e)] for s, e in doc["ranges"]],
                   bool(doc["complete"]), doc.get("sha256"),
                   bound=int(doc.get("bound", size)), at_most=bool(doc.get("at_most", False)),
                   fixed=bool(doc.get("fixed", True)),
                   promised=None if doc.get("promised") is None else int(doc["promised"]))
