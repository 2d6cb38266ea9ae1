"""Fewer copies in asyncssh's AES-GCM packet path (the migration service's cipher).

asyncssh 2.x encrypts an SSH packet as ``header + ct_and_tag[:-16]`` and then sends
``packet + tag`` (three copies of every byte), and decrypts ``first[4:] + rest`` then
``... + tag`` (two copies), with a fresh AES key schedule per packet. Before that, its
input buffer is a ``bytes`` that every received chunk is appended to and every parsed
header and packet is sliced off (each a copy of all that is buffered). :func:`install`
replaces :class:`asyncssh.encryption.GCMEncryption`'s two packet methods with versions that
make one copy fewer each way and keep one ``AESGCM`` per key, and, once a connection
receives with AES-GCM, keeps its input buffer as a ``memoryview`` (slicing it off is free).
A packet is parsed only once all of it is buffered (the length is in clear with GCM), so it
is decrypted straight from one view of the buffer; a packet straddling two socket reads is
the only thing joined (its own bytes, not the rest of the read), and :func:`read_size` lets
the receiver read 1 MiB at a time so that few do. On connections marked
with :func:`deliver_views` (the migration server's: its only channels are disk sessions,
which take any buffer), a decrypted ``CHANNEL_DATA`` packet stays a ``memoryview`` too, so
the payload reaches the session without the two more slices asyncssh would copy. The
sending side (:mod:`~vmresize.agent.transfer.gcmsend`) builds each packet in one buffer and
encrypts it in place. The bytes on the wire, the nonce sequence and the tag check are
exactly those of the originals (RFC 5647 as OpenSSH does it), which
``tests/unit/agent/test_gcm.py`` checks.

It only patches the asyncssh versions it was written against (the methods' contract is
private), and is a no-op otherwise. Installed by the migration client and server modules.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh import encryption
from asyncssh.connection import SSHConnection
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vmresize.agent.transfer import gcmsend

__all__ = ["install"]

_TAG = 16
_MSG_CHANNEL_DATA = 94
_VIEWS = "_vmresize_views"
_BASE = "_vmresize_packet"
KNOWN_VERSIONS = ("2.21.", "2.22.", "2.23.", "2.24.")
_ORIGINAL: dict[str, Any] = {}


def _aead(cipher: Any) -> AESGCM:
    aead: AESGCM | None = cipher.__dict__.get("_vmresize_aead")
    if aead is None:  # one per key: asyncssh makes a new cipher object on every rekey
        aead = cipher._vmresize_aead = AESGCM(cipher._key)
    return aead


def _encrypt_packet(self: Any, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
    cipher = self._cipher
    sealed = _aead(cipher).encrypt(cipher._iv, packet, header)  # ciphertext || tag
    cipher._update_iv()
    return header + memoryview(sealed)[:-_TAG], sealed[-_TAG:]


def _decrypt_packet(self: Any, seq: int, first: bytes, rest: bytes, header_len: int,
                    mac: bytes) -> bytes | None:
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
    if type(enc) is encryption.GCMEncryption:
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
    if not isinstance(self._recv_encryption, encryption.GCMEncryption):
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


def read_size(conn: Any, size: int) -> None:
    """Let ``conn``'s socket transport read up to ``size`` bytes at a time (asyncio's
    ``_SelectorSocketTransport`` reads ``max_size``, 256 KiB); other transports are left be."""
    transport = getattr(conn, "_transport", None)
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = size  # type: ignore[union-attr]


def deliver_views(conn: Any) -> None:
    """Let ``conn`` hand its channels' data to them as memoryviews (module docstring)."""
    conn.__dict__[_VIEWS] = True


def install() -> bool:
    """Patch asyncssh's GCM packet path (see the module docstring)."""
    cls = encryption.GCMEncryption
    if _ORIGINAL:
        return True
    if not asyncssh.__version__.startswith(KNOWN_VERSIONS):
        return False
    _ORIGINAL["encrypt_packet"] = cls.encrypt_packet
    _ORIGINAL["decrypt_packet"] = cls.decrypt_packet
    _ORIGINAL["data_received"] = SSHConnection.data_received
    _ORIGINAL["_recv_pkthdr"] = SSHConnection._recv_pkthdr
    cls.encrypt_packet = _encrypt_packet  # type: ignore[method-assign]
    cls.decrypt_packet = _decrypt_packet  # type: ignore[method-assign]
    SSHConnection.data_received = _data_received  # type: ignore[method-assign]
    SSHConnection._recv_pkthdr = _recv_pkthdr  # type: ignore[method-assign]
    gcmsend.install(asyncssh.__version__)  # the send side: one buffer, encrypted in place
    return True


def original(name: str) -> Any:
    """The unpatched method ``name`` (for the equivalence test)."""
    return _ORIGINAL.get(name, getattr(encryption.GCMEncryption, name))
