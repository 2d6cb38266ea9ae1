"""The transfer's fast path: fewer copies in asyncssh's AES-GCM packet path, both ways.

This is the one place that reaches into asyncssh's private methods. It is off until
:func:`install` is called (the agent does it at startup, after
:mod:`~vmresize.agent.transfer.fastpath_check` proved it on the installed versions), and
:func:`uninstall` puts asyncssh's own methods back.

Receiving. asyncssh 2.x decrypts ``first[4:] + rest`` then ``... + tag`` (two copies),
with a fresh AES key schedule per packet, and keeps its input buffer as a ``bytes`` that
every received chunk is appended to and every parsed packet sliced off (each a copy of
all that is buffered). Here the input buffer is a ``memoryview`` once a connection
receives with AES-GCM (slicing it off is free); a packet is parsed only once all of it is
buffered (the length is in clear with GCM), so it is decrypted straight from one view of
the buffer, and only a packet straddling two socket reads is joined (its own bytes, not
the rest of the read). :func:`read_size` lets the receiver read 1 MiB at a time so that
few do. On connections marked with :func:`deliver_views` (the migration server's: its only
channels are disk sessions, which take any buffer), a decrypted ``CHANNEL_DATA`` packet
stays a ``memoryview`` too.

Sending. Profiled on the sender of a 1 GiB transfer (256 KiB packets), asyncssh copied
every data byte eight times in Python and made two ``getrandom`` syscalls per data packet
for 4-16 bytes of padding. Here:

* ``SSHChannel._flush_send_buf`` hands ``memoryview`` slices of the channel's send buffer
  (the copy ``write`` made, or the caller's own buffer with :func:`write_view`) to the
  connection as separate fields: no copy;
* ``SSHConnection.send_packet``, once keys and auth are settled, writes the padding length,
  type, fields and padding into one plaintext buffer (the only copy of the data in Python)
  and encrypts it with ``AESGCM.encrypt_into`` into the packet buffer behind the length,
  the tag right behind it. The two buffers never overlap: that is all the library
  promises (cryptography 51 refuses overlapping ones). Both buffers are reused when the
  transport is asyncio's socket transport (its ``write`` sends or copies before it
  returns);
* padding comes from a pool of ``os.urandom`` bytes refilled every 64 KiB;
* the ``MSG_IGNORE`` asyncssh puts in front of every packet after the key exchange is
  written into the same buffer and sent with the packet in one write.

Anything else (key exchange, auth, a rekey falling due, compression, another cipher) goes
through asyncssh's own method. The bytes on the wire, the nonce sequence and the tag check
are those of asyncssh (RFC 5647 as OpenSSH does it), with other random padding:
``tests/unit/agent/test_fastpath.py`` checks them byte for byte, and the startup
self-test checks them against asyncssh's own path on the versions installed. A connection
marked with :func:`use_stock` keeps asyncssh's own methods even while the fast path is
installed (the self-test's peer).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncssh
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
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KNOWN_VERSIONS", "deliver_views", "install", "installed", "original", "read_size",
           "uninstall", "use_stock", "write_view"]

KNOWN_VERSIONS = ("2.24.",)
"""The asyncssh versions whose private methods the patches below mirror (checked against
2.24.1); pyproject.toml bounds asyncssh below 2.25 for the same reason."""
_TAG = 16
_POOL_BYTES = 64 * 1024
_MSG_CHANNEL_DATA = 94
_VIEWS = "_vmresize_views"
_BASE = "_vmresize_packet"
_STOCK = "_vmresize_stock"
_SENDBUF = "_vmresize_sendbuf"
_PLAIN = "_vmresize_plainbuf"
_IGNORE = String(b"")
_ORIGINAL: dict[str, Any] = {}
_pool = memoryview(b"")
# asyncio's socket transports: write() sends, or copies what it could not send, before it returns
_COPYING: type = getattr(asyncio.selector_events, "_SelectorTransport", type(None))


def _stock(obj: Any) -> bool:
    return bool(obj.__dict__.get(_STOCK))


def _aead(cipher: Any) -> AESGCM:
    aead: AESGCM | None = cipher.__dict__.get("_vmresize_aead")
    if aead is None:  # one per key: asyncssh makes a new cipher object on every rekey
        aead = cipher._vmresize_aead = AESGCM(cipher._key)
    return aead


# --- the cipher's packet methods and the receive path ------------------------------------

def _encrypt_packet(self: Any, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
    if _stock(self):
        result: tuple[bytes, bytes] = _ORIGINAL["encrypt_packet"](self, seq, header, packet)
        return result
    cipher = self._cipher
    sealed = _aead(cipher).encrypt(cipher._iv, packet, header)  # ciphertext || tag
    cipher._update_iv()
    return header + memoryview(sealed)[:-_TAG], sealed[-_TAG:]


def _decrypt_packet(self: Any, seq: int, first: bytes, rest: bytes, header_len: int,
                    mac: bytes) -> bytes | None:
    if _stock(self):
        result: bytes | None = _ORIGINAL["decrypt_packet"](self, seq, first, rest, header_len,
                                                           mac)
        return result
    cipher = self._cipher
    # The whole packet as one view of the input buffer, when _recv_pkthdr saw it complete
    # (then first, rest and mac are its consecutive slices): no join of 256 KiB.
    base: memoryview | None = self.__dict__.pop(_BASE, None)
    size = len(first) + len(rest) + len(mac)
    sealed: bytes | memoryview
    aad: bytes | memoryview
    if base is not None and len(base) >= size and base[:len(first)] == first:
        sealed, aad = base[header_len:size], base[:header_len]
    else:
        sealed, aad = b"".join((first[header_len:], rest, mac)), first[:header_len]
    try:
        plain: bytes | None = _aead(cipher).decrypt(cipher._iv, sealed, aad)
    except InvalidTag:
        plain = None
    cipher._update_iv()
    if plain is not None and self.__dict__.get(_VIEWS) and plain[1] == _MSG_CHANNEL_DATA:
        return memoryview(plain)  # type: ignore[return-value]  # [0] is the padding length
    return plain


def _recv_pkthdr(self: Any) -> bool:
    enc = self._recv_encryption
    if _stock(self):
        if enc is not None:  # a new object after every key exchange, none before the first
            enc.__dict__[_STOCK] = True
    elif type(enc) is encryption.GCMEncryption:
        # The length is in clear with AES-GCM: parse a packet only once all of it is here,
        # so that it is one contiguous view (see _decrypt_packet and _data_received).
        buf = self._inpbuf
        if len(buf) < 4:
            return False
        pktlen = int.from_bytes(buf[:4], "big")
        if pktlen > self._max_recv_pktlen:
            raise asyncssh.ProtocolError("Max packet size exceeded")
        if len(buf) < 4 + pktlen + self._recv_macsize:
            return False
        enc.__dict__[_BASE] = buf[:4 + pktlen + self._recv_macsize]
    result: bool = _ORIGINAL["_recv_pkthdr"](self)
    return result


def _data_received(self: Any, data: bytes, datatype: Any = None) -> None:
    if _stock(self) or not isinstance(self._recv_encryption, encryption.GCMEncryption):
        if isinstance(self._inpbuf, memoryview):  # never expected: back to what it knows
            self._inpbuf = self._inpbuf.tobytes()
        _ORIGINAL["data_received"](self, data, datatype)
        return
    # Only the header and packet parsers (and the GCM decrypt above) see the buffer once
    # encryption is on; they slice it and hand the slices on, which memoryviews support.
    if self.__dict__.get(_VIEWS):  # the encryption object is new after every rekey
        self._recv_encryption.__dict__[_VIEWS] = True
    left = self._inpbuf
    view = memoryview(data)
    if left and len(left) >= 4 and self._recv_handler == self._recv_pkthdr:
        # A packet straddles two reads: join only its own missing bytes to what is left,
        # parse it, and parse the rest of this read in place (not one more copy of it all).
        lack = 4 + int.from_bytes(left[:4], "big") + self._recv_macsize - len(left)
        if 0 < lack < len(view):
            self._inpbuf = memoryview(b"".join((left, view[:lack])))
            self._recv_data()
            left, view = self._inpbuf, view[lack:]  # left: empty unless a handler waits
    self._inpbuf = memoryview(b"".join((left, view))) if left else view
    self._recv_data()


# --- sending ----------------------------------------------------------------------------------

def _padding(n: int) -> memoryview:
    """``n`` random bytes, from a pool of ``os.urandom`` refilled when it runs low."""
    global _pool
    if len(_pool) < n:
        _pool = memoryview(os.urandom(_POOL_BYTES))
    out, _pool = _pool[:n], _pool[n:]
    return out


def _reused(conn: Any, key: str, size: int) -> memoryview:
    """``size`` bytes of the connection's buffer ``key`` (grown when too small)."""
    buf: bytearray | None = conn.__dict__.get(key)
    if buf is None or len(buf) < size:
        buf = bytearray(max(size, 256 * 1024 + 64))
        conn.__dict__[key] = buf
    return memoryview(buf)[:size]


def _packet_buffer(conn: Any, size: int) -> memoryview:
    """A writable buffer for the packets of one write; the connection's own one when its
    transport copies what it does not send at once (asyncio's socket transport)."""
    if not isinstance(conn._transport, _COPYING) or conn._transport is None:
        return memoryview(bytearray(size))
    return _reused(conn, _SENDBUF, size)


def _send_packet(self: Any, pkttype: int, *args: Any, handler: Any = None) -> None:
    enc = self._send_encryption
    if _stock(self) and enc is not None:  # a new object after every key exchange
        enc.__dict__[_STOCK] = True
    if (_stock(self) or type(enc) is not encryption.GCMEncryption
            or self._compressor is not None
            or not (self._auth_complete and self._kex_complete)
            or self._rekey_bytes_sent >= self._rekey_bytes
            or (self._rekey_seconds and time.monotonic() >= self._rekey_time)):
        # asyncssh's method may keep the arguments for later (it defers every data packet
        # while a key exchange runs), but a view's bytes belong to a buffer the sender
        # refills once the channel is drained: hand it a copy.
        args = tuple(a.tobytes() if isinstance(a, memoryview) else a for a in args)
        _ORIGINAL["send_packet"](self, pkttype, *args, handler=handler)
        return
    ignore = pkttype > MSG_KEX_LAST
    paylen = 1 + sum(len(a) for a in args)
    size = (_wire_size(self, 1 + len(_IGNORE)) if ignore else 0) + _wire_size(self, paylen)
    view = _packet_buffer(self, size)
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
    plain = _reused(self, _PLAIN, pktlen)
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
    if _stock(self._conn):
        _ORIGINAL["_flush_send_buf"](self)
        return
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


# --- the seams the transfer uses, patched or not ----------------------------------------------

def write_view(chan: Any, data: memoryview) -> None:
    """``chan.write(data)`` without the copy ``SSHChannel.write`` makes of it (4 MiB chunks:
    0.13 s per GiB). The caller must leave ``data`` unchanged until the channel's write
    buffer is empty again (``set_write_buffer_limits(0, 0)``, then ``drain``); where the
    fast path is not installed, this is ``chan.write``."""
    if not _ORIGINAL or chan._encoding or _stock(chan._conn):
        chan.write(data)
        return
    if chan._send_state != "open":
        raise BrokenPipeError("Channel not open for sending")
    if data:
        chan._send_buf.append((data, None))
        chan._send_buf_len += len(data)
        chan._flush_send_buf()


def read_size(conn: Any, size: int) -> None:
    """Let ``conn``'s socket transport read up to ``size`` bytes at a time (asyncio's
    ``_SelectorSocketTransport`` reads ``max_size``, 256 KiB); other transports are left be."""
    transport = getattr(conn, "_transport", None)
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = size  # type: ignore[union-attr]


def deliver_views(conn: Any) -> None:
    """Let ``conn`` hand its channels' data to them as memoryviews (module docstring)."""
    conn.__dict__[_VIEWS] = True


def use_stock(conn: Any) -> None:
    """Keep asyncssh's own packet path on ``conn`` (call it before any data flows)."""
    conn.__dict__[_STOCK] = True


# --- install ----------------------------------------------------------------------------------

_PATCHES: tuple[tuple[type, str, Any], ...] = (
    (encryption.GCMEncryption, "encrypt_packet", _encrypt_packet),
    (encryption.GCMEncryption, "decrypt_packet", _decrypt_packet),
    (SSHConnection, "data_received", _data_received),
    (SSHConnection, "_recv_pkthdr", _recv_pkthdr),
    (SSHConnection, "send_packet", _send_packet),
    (SSHChannel, "_flush_send_buf", _flush_send_buf),
)


def supported() -> str | None:
    """Why the fast path cannot be installed here, or None when it can."""
    if not asyncssh.__version__.startswith(KNOWN_VERSIONS):
        return (f"asyncssh {asyncssh.__version__} is not one the fast path mirrors "
                f"({', '.join(v + 'x' for v in KNOWN_VERSIONS)})")
    if not hasattr(AESGCM, "encrypt_into"):
        return "this cryptography has no AESGCM.encrypt_into"
    return None


def install() -> bool:
    """Replace asyncssh's packet methods with the ones above; False where :func:`supported`
    says no. Connections opened before keep working (the methods are the class's)."""
    if _ORIGINAL:
        return True
    if supported() is not None:
        return False
    for cls, name, patched in _PATCHES:
        _ORIGINAL[name] = getattr(cls, name)
        setattr(cls, name, patched)
    return True


def uninstall() -> None:
    """Put asyncssh's own methods back."""
    for cls, name, _ in _PATCHES:
        if name in _ORIGINAL:
            setattr(cls, name, _ORIGINAL.pop(name))


def installed() -> bool:
    """Whether the fast path is installed now."""
    return bool(_ORIGINAL)


def original(name: str) -> Any:
    """asyncssh's own method ``name`` (installed or not)."""
    for cls, patched_name, _ in _PATCHES:
        if patched_name == name:
            return _ORIGINAL.get(name, getattr(cls, name))
    raise KeyError(name)
