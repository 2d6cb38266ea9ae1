"""The fast path's AES-GCM packet methods produce exactly what asyncssh's originals do."""

from __future__ import annotations

import os

import pytest
from asyncssh.encryption import GCMEncryption
from asyncssh.packet import String, UInt32

from vmresize.agent.transfer import fastpath


@pytest.mark.parametrize("name", ["aes128-gcm", "aes256-gcm"])
def test_patched_packets_match_the_originals(name: str) -> None:
    assert fastpath.install()
    key = os.urandom(16 if name.startswith("aes128") else 32)
    iv = os.urandom(12)
    # one object per direction and implementation, advancing their nonces in lockstep
    tx, tx_orig, rx, rx_orig = (GCMEncryption.new(name, key, iv) for _ in range(4))
    enc_orig, dec_orig = fastpath.original("encrypt_packet"), fastpath.original("decrypt_packet")
    for seq, size in enumerate([16, 1000, 256 * 1024 + 48, 32]):
        # asyncssh's key files call it without a header (packet and tag used apart)
        header = b"" if seq == 0 else size.to_bytes(4, "big")
        body = os.urandom(size)
        expected: bytes | None = body
        packet, mac = tx.encrypt_packet(seq, header, body)
        assert (packet, mac) == enc_orig(tx_orig, seq, header, body)  # same bytes and nonce
        first, rest, hl = packet[:16], packet[16:], len(header)
        if seq == 3:  # a flipped bit fails the tag check, as before
            rest = bytes([rest[0] ^ 1]) + rest[1:]
            expected = None
        assert rx.decrypt_packet(seq, first, rest, hl, mac) == expected
        assert dec_orig(rx_orig, seq, first, rest, hl, mac) == expected


class _Conn:
    """The state asyncssh's ``SSHConnection.send_packet`` reads, keys and auth settled; what
    it sends is collected. ``impl`` is the send_packet it runs (asyncssh's or ours)."""

    def __init__(self, impl: object, enc: GCMEncryption) -> None:
        self._impl = impl
        self._auth_complete = self._kex_complete = True
        self._auth_in_progress = self._strict_kex = False
        self._rekey_bytes_sent, self._rekey_bytes = 0, 1 << 30
        self._rekey_seconds, self._rekey_time = 3600, float("inf")
        self._deferred_packets: list[object] = []
        self._send_encryption, self._compressor = enc, None
        self._compress_after_auth = False
        self._send_enchdrlen, self._send_blocksize = 1, 16  # as asyncssh sets them for GCM
        self._send_seq = 7
        self._transport = None
        self.sent: list[bytes] = []
        self.logged: list[tuple[int, int, bytes]] = []

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        self._impl(self, pkttype, *args, handler=handler)  # type: ignore[operator]

    def _send(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def log_sent_packet(self, pkttype: int, seq: int, payload: bytes) -> None:
        self.logged.append((pkttype, seq, bytes(payload)))


def test_send_path_sends_what_asyncssh_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fastpath.install()
    original = fastpath.original("send_packet")
    assert original is not None  # asyncssh 2.24 here: the send path is patched
    key, iv = os.urandom(16), os.urandom(12)
    data = memoryview(bytearray(os.urandom(300_000)))
    monkeypatch.setattr(os, "urandom", lambda n: b"\x5a" * n)  # the same padding for both
    # An earlier send in this process may have filled the padding pool with real random
    # bytes: start from an empty one, so ours draws from the patched urandom too.
    monkeypatch.setattr(fastpath, "_pool", memoryview(b""))
    ours = _Conn(fastpath._send_packet, GCMEncryption.new("aes128-gcm", key, iv))
    theirs = _Conn(original, GCMEncryption.new("aes128-gcm", key, iv))
    packets: list[tuple[int, tuple[bytes | memoryview, ...]]] = [
        (94, (UInt32(3), UInt32(256 * 1024), data[:256 * 1024])),  # channel data, as flushed
        (94, (UInt32(3), UInt32(17), data[1000:1017])),
        (2, (String(b""),)),                                       # below KEX_LAST: no ignore
        (98, (UInt32(3), String(b"exit-status"), b"\0", UInt32(0))),
    ]
    for pkttype, args in packets:
        ours.send_packet(pkttype, *args)
        joined = tuple(bytes(a) for a in args)  # asyncssh's own callers pass bytes
        theirs.send_packet(pkttype, *joined)
    # same bytes, same nonces, an ignore before each > 49 (sent with it in one write)
    assert b"".join(ours.sent) == b"".join(theirs.sent)
    assert (len(ours.sent), len(theirs.sent)) == (4, 7)
    assert ours.logged == theirs.logged
    assert (ours._send_seq, ours._rekey_bytes_sent) == (theirs._send_seq,
                                                        theirs._rekey_bytes_sent)


def test_send_path_leaves_a_due_rekey_to_asyncssh() -> None:
    assert fastpath.install()
    conn = _Conn(fastpath._send_packet, GCMEncryption.new("aes128-gcm", os.urandom(16),
                                                         os.urandom(12)))
    conn._rekey_bytes_sent = conn._rekey_bytes  # due: asyncssh's method starts the kex
    calls: list[int] = []
    orig = fastpath.original("send_packet")
    fastpath._ORIGINAL["send_packet"] = lambda self, t, *a, handler=None: calls.append(t)
    try:
        conn.send_packet(94, UInt32(3), UInt32(1), b"x")
    finally:
        fastpath._ORIGINAL["send_packet"] = orig
    assert calls == [94]
    assert conn.sent == []


def test_data_deferred_during_a_key_exchange_is_a_copy() -> None:
    """While a re-key runs asyncssh keeps data packets for later; the sender refills its
    buffer as soon as the channel is drained, so what is kept must not be a view of it
    (a 4 GiB transfer, re-keyed every GiB, arrived with another checksum)."""
    assert fastpath.install()
    conn = _Conn(fastpath._send_packet, GCMEncryption.new("aes128-gcm", os.urandom(16),
                                                         os.urandom(12)))
    conn._kex_complete = False  # a re-key in progress
    buf = bytearray(b"A" * 64)
    conn.send_packet(94, UInt32(3), UInt32(64), memoryview(buf)[:64])
    buf[:] = b"B" * 64  # the next chunk read into the same buffer
    ((pkttype, args),) = conn._deferred_packets  # type: ignore[misc]
    assert pkttype == 94
    assert bytes(args[-1]) == b"A" * 64
    assert conn.sent == []
