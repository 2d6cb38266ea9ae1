"""The fast path proves itself or steps aside: the self-test the agent runs at startup.

:func:`enable` installs :mod:`~vmresize.agent.transfer.fastpath` and then checks it
against asyncssh's own path on the versions installed here:

1. packets: the fast path's AES-GCM packet encryption gives asyncssh's bytes and tags for
   the same key, nonce and input, and each side decrypts the other's packets (a flipped
   bit fails on both); what the fast send path puts on the wire for channel data, asyncssh
   decrypts to the very payloads (its ignore packet first); both under two keys, as
   after a key exchange;
2. connections: a fast-path client against an asyncssh-only server, and an asyncssh-only
   client against a fast-path server, on 127.0.0.1, each sending 2 MiB both ways through
   a channel while the keys are exchanged again every 256 KiB; what arrives is compared
   byte for byte with what was sent.

Any difference, exception or timeout uninstalls the fast path and says why; the transfer
then runs on asyncssh's own path, which the agent reports in its metric and on its Host
(see :class:`FastPathState`). The self-test never depends on the behaviour it checks: a
library that changed what it does fails it instead of corrupting a disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import asyncssh
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
from asyncssh.encryption import GCMEncryption
from asyncssh.packet import String, UInt32

from vmresize.agent.transfer import fastpath
from vmresize.agent.transfer.keys import generate_key, public_openssh

log = logging.getLogger(__name__)

CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_SIZES = (16, 1000, 256 * 1024 + 48, 32)
_STREAM = 2 * 1024 * 1024 + 4321  # not packet-aligned on purpose
_REKEY = 256 * 1024
_TIMEOUT = 30.0


@dataclass(frozen=True)
class FastPathState:
    """What the transfer runs on, and why: ``reason`` is a CamelCase word for a condition
    (``SelfTestPassed``, ``SelfTestFailed``, ``Unsupported``, ``Disabled``)."""

    active: bool
    reason: str
    message: str


def versions() -> str:
    """The versions the self-test ran on, for the log and the Host."""
    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"
    return f"asyncssh {v('asyncssh')}, cryptography {v('cryptography')}"


def check_packets() -> None:
    """Step 1 of the module docstring; raises AssertionError on a difference."""
    for name in (c.removesuffix("@openssh.com") for c in CIPHERS):
        for rekey in range(2):  # a second key: the per-key state must follow it
            seed = hashlib.sha256(f"{name}/{rekey}".encode()).digest()
            key, iv = seed[:16 if name.startswith("aes128") else 32], seed[-12:]
            fast, stock, rx_fast, rx_stock = (GCMEncryption.new(name, key, iv)
                                              for _ in range(4))
            for obj in (stock, rx_stock):
                fastpath.use_stock(obj)
            for seq, size in enumerate(_SIZES):
                header = size.to_bytes(4, "big")
                body = hashlib.sha256(bytes([seq])).digest() * (size // 32 + 1)
                body = body[:size]
                packet, mac = fast.encrypt_packet(seq, header, body)
                ref_packet, ref_mac = stock.encrypt_packet(seq, header, body)
                if (bytes(packet), bytes(mac)) != (bytes(ref_packet), bytes(ref_mac)):
                    raise AssertionError(f"{name}: packet {seq} encrypts differently")
                for rx, (p, m) in ((rx_stock, (packet, mac)), (rx_fast, (ref_packet, ref_mac))):
                    got = rx.decrypt_packet(seq, p[:16], p[16:], len(header), m)
                    if got is None or bytes(got) != body:
                        raise AssertionError(f"{name}: packet {seq} does not decrypt")
            bad = bytes(packet[:20]) + bytes([packet[20] ^ 1]) + bytes(packet[21:])
            for rx in (rx_fast, rx_stock):
                if rx.decrypt_packet(len(_SIZES), bad[:16], bad[16:], 4, mac) is not None:
                    raise AssertionError(f"{name}: a flipped bit passed the tag check")


class _SendProbe:
    """The state the send path reads of an ``SSHConnection`` with keys and auth settled;
    what it sends is collected."""

    def __init__(self, enc: GCMEncryption) -> None:
        self._send_encryption, self._compressor = enc, None
        self._auth_complete = self._kex_complete = True
        self._strict_kex = False
        self._rekey_bytes_sent, self._rekey_bytes = 0, 1 << 40
        self._rekey_seconds, self._rekey_time = 0, 0.0
        self._send_enchdrlen, self._send_blocksize = 1, 16  # as asyncssh sets them for GCM
        self._send_seq = 0
        self._transport = None
        self.wire = bytearray()

    def log_sent_packet(self, pkttype: int, seq: int, payload: Any) -> None:
        pass

    def _send(self, data: Any) -> None:
        self.wire += data


def _payloads(wire: bytes, rx: GCMEncryption, seq: int) -> list[bytes]:
    """The payloads of the packets on ``wire``, decrypted by ``rx`` (asyncssh's own)."""
    out, at = [], 0
    while at < len(wire):
        end = at + 4 + int.from_bytes(wire[at:at + 4], "big")
        plain = rx.decrypt_packet(seq, wire[at:at + 16], wire[at + 16:end], 4,
                                  wire[end:end + 16])
        if plain is None:
            raise AssertionError(f"packet {seq} of the send path fails asyncssh's tag check")
        out.append(bytes(plain[1:len(plain) - plain[0]]))
        at, seq = end + 16, seq + 1
    return out


def check_send_path() -> None:
    """What the fast send path sends, asyncssh's own decryption reads back (step 1)."""
    name = "aes256-gcm"
    for rekey in range(2):
        seed = hashlib.sha256(f"send/{rekey}".encode()).digest()
        key, iv = seed, seed[:12]
        enc, rx = GCMEncryption.new(name, key, iv), GCMEncryption.new(name, key, iv)
        fastpath.use_stock(rx)
        probe = _SendProbe(enc)
        data = memoryview(hashlib.sha256(bytes([rekey])).digest() * 8200)  # 262,400 bytes
        expected = []
        for size in (256 * 1024, 17, 1):
            chunk = data[:size]
            fastpath._send_packet(probe, MSG_CHANNEL_DATA, UInt32(3), UInt32(size), chunk)
            expected += [bytes([MSG_IGNORE]) + String(b""),
                         bytes([MSG_CHANNEL_DATA]) + UInt32(3) + UInt32(size) + chunk]
        if _payloads(bytes(probe.wire), rx, 0) != expected:
            raise AssertionError(f"{name}: the send path's payloads differ from what was sent")


class _Echo(asyncssh.SSHServerSession[bytes]):
    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def exec_requested(self, command: str) -> bool:
        return True

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._chan.write(bytes(data))

    def eof_received(self) -> bool:
        self._chan.exit(0)
        return False


def _server_factory(stock: bool) -> type[asyncssh.SSHServer]:
    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self._conn = conn
            if stock:
                fastpath.use_stock(conn)
            else:
                fastpath.deliver_views(conn)  # as the migration server does

        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def session_requested(self) -> Any:
            return self._conn.create_server_channel(encoding=None), _Echo()
    return Server


class _StockClient(asyncssh.SSHClient):
    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        fastpath.use_stock(conn)


async def check_connection(*, fast_client: bool, cipher: str) -> None:
    """Step 2 of the module docstring, for one pairing; raises on a difference."""
    host, client = generate_key(), generate_key()
    acceptor = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=_server_factory(stock=fast_client),
        server_host_keys=[host], encryption_algs=[cipher], rekey_bytes=_REKEY,
        authorized_client_keys=asyncssh.import_authorized_keys(public_openssh(client) + "\n"))
    try:
        port = acceptor.get_port()
        known = asyncssh.import_known_hosts(f"[127.0.0.1]:{port} {public_openssh(host)}\n")
        data = os.urandom(_STREAM)
        async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=known, client_keys=[client], username="selftest",
                config=[], agent_path=None, encryption_algs=[cipher], rekey_bytes=_REKEY,
                client_factory=None if fast_client else _StockClient) as conn:
            writer, reader, _ = await conn.open_session(
                command="echo", encoding=None, window=1024 * 1024, max_pktsize=256 * 1024)
            received = asyncio.ensure_future(reader.readexactly(len(data)))
            writer.channel.set_write_buffer_limits(0, 0)
            view = memoryview(data)
            for at in range(0, len(data), 300_007):
                fastpath.write_view(writer.channel, view[at:at + 300_007])
                await writer.drain()
            echoed = await received
            writer.write_eof()
        if echoed != data:
            raise AssertionError(f"{'fast' if fast_client else 'stock'} client, {cipher}: "
                                 "the echoed stream differs from what was sent")
    finally:
        acceptor.close()
        await acceptor.wait_closed()


async def self_test() -> None:
    """Both steps; raises on any difference."""
    check_packets()
    check_send_path()
    for fast_client, cipher in ((True, CIPHERS[0]), (False, CIPHERS[1])):
        await asyncio.wait_for(check_connection(fast_client=fast_client, cipher=cipher),
                               _TIMEOUT)


async def enable(wanted: bool) -> FastPathState:
    """Install the fast path if ``wanted``, keep it only if the self-test passes."""
    where = versions()
    if not wanted:
        fastpath.uninstall()
        return FastPathState(False, "Disabled", f"the fast path is turned off ({where})")
    why = fastpath.supported()
    if why is not None:
        log.warning("transfer fast path not used: %s", why)
        return FastPathState(False, "Unsupported", f"{why}; asyncssh's own path is used")
    fastpath.install()
    try:
        await self_test()
    except Exception as e:  # anything at all means: do not use it
        fastpath.uninstall()
        log.warning("transfer fast path failed its self-test on %s, using asyncssh's own "
                    "path: %r", where, e)
        return FastPathState(False, "SelfTestFailed",
                             f"self-test failed on {where}: {e!r}; asyncssh's own path is used")
    log.info("transfer fast path passed its self-test on %s", where)
    return FastPathState(True, "SelfTestPassed", f"self-test passed on {where}")
