"""The copy-saving AES-GCM packet methods produce exactly what asyncssh's originals do."""

from __future__ import annotations

import os

import pytest
from asyncssh.encryption import GCMEncryption

from vmresize.agent.transfer import gcm


@pytest.mark.parametrize("name", ["aes128-gcm", "aes256-gcm"])
def test_patched_packets_match_the_originals(name: str) -> None:
    assert gcm.install()
    key = os.urandom(16 if name.startswith("aes128") else 32)
    iv = os.urandom(12)
    # one object per direction and implementation, advancing their nonces in lockstep
    tx, tx_orig, rx, rx_orig = (GCMEncryption.new(name, key, iv) for _ in range(4))
    enc_orig, dec_orig = gcm.original("encrypt_packet"), gcm.original("decrypt_packet")
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
