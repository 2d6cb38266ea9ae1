"""The sending half of :mod:`~vmresize.agent.transfer.gcm`: an SSH packet built in one buffer
and encrypted in place, for connections whose send cipher is AES-GCM.

Profiled on the sender of a 1 GiB transfer (asyncssh 2.24, 256 KiB packets), asyncssh's
send path copied every data byte eight times in Python before the socket did: the
channel's ``buf[:pktsize]``, ``String(data)``, ``UInt32(chan) + ...``, ``Byte(type) + ...``,
``Byte(padlen) + payload``, ``+ os.urandom(padlen)``, ``header + ciphertext`` and
``packet + tag`` (``memmove`` was 30 % of the sender's CPU), and it made two ``getrandom``
syscalls a data packet for 4-16 bytes of padding (one for the ``MSG_IGNORE`` it puts before
every packet; 0.19 s per GiB). Here:

* ``SSHChannel._flush_send_buf`` hands ``memoryview`` slices of the channel's send buffer
  (the copy ``write`` made, or the caller's own buffer with :func:`write_view`) to the
  connection as separate fields: no copy;
* ``SSHConnection.send_packet``, once keys and auth are settled, writes the length,
  padding length, type, fields and padding into one plaintext buffer (the only copy of
  the data in Python), encrypts it with ``AESGCM.encrypt_into`` into the packet buffer
  behind the length (the tag lands right behind it; the two buffers never overlap, which
  is all the library promises) and hands that buffer to the transport in one write. The
  buffers are reused when the transport is asyncio's socket transport (its ``write`` sends
  or copies before it returns);
* padding comes from a pool of ``os.urandom`` bytes refilled every 64 KiB.

Anything else (key exchange, auth, a rekey falling due, compression, another cipher) goes
through asyncssh's own method. The ``MSG_IGNORE`` asyncssh puts in front of every packet is
kept, written into the same buffer and sent with the packet in one write (half the send
syscalls): the bytes on the wire are what asyncssh would send, with other random padding.
``tests/unit/agent/test_gcm.py`` checks the packets against asyncssh's, byte for byte.
Installed by :func:`vmresize.agent.transfer.gcm.install` for the asyncssh versions below.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from asyncssh import encryption
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_EXTENDED_DATA,
    MSG_IGNORE,
    MSG_KEX_LAST,
    MSG_NEWKEYS,
)
from asyncssh.packet import String, UInt32
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KNOWN_VERSIONS", "install", "original", "write_view"]

# The two methods below mirror these versions' bodies (checked against 2.24.1).
KNOWN_VERSIONS = ("2.24.",)
_TAG = 16
_POOL_BYTES = 64 * 1024
_BUF = "_vmresize_sendbuf"
_PLAIN = "_vmresize_plainbuf"
_IGNORE = String(b"")
_ORIGINAL: dict[str, Any] = {}
_pool = memoryview(b"")
# asyncio's socket transports: write() sends, or copies what it could not send, before it returns
_COPYING: type = getattr(asyncio.selector_events, "_SelectorTransport", type(None))


def _padding(n: int) -> memoryview:
    """``n`` random bytes, from a pool of ``os.urandom`` refilled when it runs low."""
    global _pool
    if len(_pool) < n:
        _pool = memoryview(os.urandom(_POOL_BYTES))
    out, _pool = _pool[:n], _pool[n:]
    return out


def _buffer(conn: Any, size: int) -> memoryview:
    """A writable buffer of ``size`` bytes; the connection's own one when its transport
    copies what it does not send at once (asyncio's socket transport), else a fresh one."""
    if not isinstance(conn._transport, _COPYING) or conn._transport is None:
        return memoryview(bytearray(size))
    buf: bytearray | None = conn.__dict__.get(_BUF)
    if buf is None or len(buf) < size:
        buf = bytearray(max(size, 256 * 1024 + 64))
        conn.__dict__[_BUF] = buf
    return memoryview(buf)[:size]


def _scratch(conn: Any, size: int) -> memoryview:
    """The connection's plaintext buffer, ``size`` bytes of it (grown when too small)."""
    buf: bytearray | None = conn.__dict__.get(_PLAIN)
    if buf is None or len(buf) < size:
        buf = bytearray(max(size, 256 * 1024 + 64))
        conn.__dict__[_PLAIN] = buf
    return memoryview(buf)[:size]


def _aead(cipher: Any) -> AESGCM:
    aead: AESGCM | None = cipher.__dict__.get("_vmresize_aead")
    if aead is None:  # one per key, shared with gcm's decrypt/encrypt methods
        aead = cipher._vmresize_aead = AESGCM(cipher._key)
    return aead


def _send_packet(self: Any, pkttype: int, *args: Any, handler: Any = None) -> None:
    enc = self._send_encryption
    if (type(enc) is not encryption.GCMEncryption or self._compressor is not None
            or not (self._auth_complete and self._kex_complete)
            or self._rekey_bytes_sent >= self._rekey_bytes
            or (self._rekey_seconds and time.monotonic() >= self._rekey_time)):
        # asyncssh's method may keep the arguments for later (it defers every data packet
        # while a key exchange runs), but a view's bytes belong to a buffer the sender
        # refills once the channel is drained: hand it a copy.
        args = tuple(a.tobytes() if isinstance(a, memoryview) else a for a in args)
        _ORIGINAL["send_packet"](self, pkttype, *args, handler=handler)
        return
    # asyncssh puts an ignore packet in front of each packet after the key exchange; here
    # both go out in one write (one send syscall, one wake-up of the receiver, not two).
    ignore = pkttype > MSG_KEX_LAST
    paylen = 1 + sum(len(a) for a in args)
    size = (_wire_size(self, 1 + len(_IGNORE)) if ignore else 0) + _wire_size(self, paylen)
    view = _buffer(self, size)
    pos = _seal(self, view, MSG_IGNORE, (_IGNORE,), None) if ignore else 0
    pos += _seal(self, view[pos:], pkttype, args, handler)
    self._send(view[:pos])


def _wire_size(conn: Any, paylen: int) -> int:
    """Bytes on the wire of a packet with a payload of ``paylen`` bytes: length, padding
    length, payload, padding, tag."""
    return 4 + 1 + paylen + _padlen(conn, paylen) + _TAG


def _padlen(conn: Any, paylen: int) -> int:
    padlen: int = -(conn._send_enchdrlen + paylen) % conn._send_blocksize
    return padlen + conn._send_blocksize if padlen < 4 else padlen


def _seal(self: Any, view: memoryview, pkttype: int, args: tuple[Any, ...],
          handler: Any) -> int:
    """Write one packet, encrypted, at the start of ``view`` and account for it as asyncssh's
    send_packet does (sequence number, rekey bytes, log); return its size on the wire."""
    paylen = 1 + sum(len(a) for a in args)
    padlen = _padlen(self, paylen)
    pktlen = 1 + paylen + padlen
    view[:4] = pktlen.to_bytes(4, "big")
    # The plaintext goes into a scratch buffer of its own and is encrypted from there into
    # the packet: AESGCM.encrypt_into does not promise to accept overlapping buffers
    # (cryptography 51 refuses them).
    plain = _scratch(self, pktlen)
    plain[0] = padlen
    plain[1] = pkttype
    pos = 2
    for arg in args:
        end = pos + len(arg)
        plain[pos:end] = arg
        pos = end
    plain[pos:pos + padlen] = _padding(padlen)
    seq = self._send_seq
    (handler or self).log_sent_packet(pkttype, seq, plain[1:1 + paylen])
    cipher = self._send_encryption._cipher
    _aead(cipher).encrypt_into(cipher._iv, plain, view[:4], view[4:4 + pktlen + _TAG])
    cipher._update_iv()
    if pkttype == MSG_NEWKEYS and self._strict_kex:  # never after kex, kept as asyncssh has it
        self._send_seq = 0
    else:
        self._send_seq = (seq + 1) & 0xffffffff
    self._rekey_bytes_sent += pktlen
    return 4 + pktlen + _TAG


def _flush_send_buf(self: Any) -> None:
    while self._send_buf and self._send_window:
        pktsize = min(self._send_window, self._send_pktsize)
        buf, datatype = self._send_buf[0]
        buf = memoryview(buf)  # of the bytearray write() copied: slices are free
        if len(buf) > pktsize:
            data = buf[:pktsize]
            self._send_buf[0] = (buf[pktsize:], datatype)
        else:
            data = buf
            del self._send_buf[0]
        self._send_buf_len -= len(data)
        self._send_window -= len(data)
        if self._send_chan is None:  # pragma: no cover  (asyncssh's send_packet ignores it)
            continue
        if datatype is None:
            self._conn.send_packet(MSG_CHANNEL_DATA, UInt32(self._send_chan),
                                   UInt32(len(data)), data, handler=self)
        else:
            self._conn.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(self._send_chan),
                                   UInt32(datatype), UInt32(len(data)), data, handler=self)
    self._pause_resume_writing()
    if not self._send_buf:
        if self._send_state == "eof_pending":
            self.send_packet(MSG_CHANNEL_EOF)
            self._send_state = "eof"
        elif self._send_state == "close_pending":
            self._close_send()


def write_view(chan: Any, data: memoryview) -> None:
    """``chan.write(data)`` without the copy ``SSHChannel.write`` makes of it (4 MiB chunks:
    0.13 s per GiB). The caller must leave ``data`` unchanged until the channel's write
    buffer is empty again (``set_write_buffer_limits(0, 0)``, then ``drain``); where the send
    path is not patched, this is ``chan.write``."""
    if not _ORIGINAL or chan._encoding:
        chan.write(data)
        return
    if chan._send_state != "open":
        raise BrokenPipeError("Channel not open for sending")
    if data:
        chan._send_buf.append((data, None))
        chan._send_buf_len += len(data)
        chan._flush_send_buf()


def install(version: str) -> bool:
    """Patch the send path (module docstring) if ``version`` is one it mirrors."""
    if _ORIGINAL:
        return True
    if not version.startswith(KNOWN_VERSIONS) or not hasattr(AESGCM, "encrypt_into"):
        return False
    _ORIGINAL["send_packet"] = SSHConnection.send_packet
    _ORIGINAL["_flush_send_buf"] = SSHChannel._flush_send_buf
    SSHConnection.send_packet = _send_packet  # type: ignore[method-assign]
    SSHChannel._flush_send_buf = _flush_send_buf  # type: ignore[method-assign]
    return True


def original(name: str) -> Any:
    """asyncssh's own method ``name`` (for the equivalence test)."""
    return _ORIGINAL.get(name)
