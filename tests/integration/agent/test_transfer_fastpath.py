"""transfer/fastpath.py's copy-saving AES-GCM path over a real asyncssh connection on 127.0.0.1,
through many key re-exchanges: the byte stream arrives intact both ways (the server's
channel data as memoryviews, as on the migration server)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import Any

import asyncssh
import pytest

from vmresize.agent.transfer import fastpath
from vmresize.agent.transfer.keys import generate_key, public_openssh

pytestmark = pytest.mark.asyncio(loop_scope="session")

CIPHER = "aes128-gcm@openssh.com"
MiB = 1024 * 1024


class _Digest(asyncssh.SSHServerSession[bytes]):
    """Hashes what arrives; on EOF answers with the sha256 and the types it was given."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._types: set[str] = set()
        self._chan: Any = None

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def session_started(self) -> None:
        pass

    def exec_requested(self, command: str) -> bool:
        return True

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._types.add(type(data).__name__)
        self._h.update(data)

    def eof_received(self) -> bool:
        self._chan.write((self._h.hexdigest() + " " + ",".join(sorted(self._types))).encode())
        self._chan.exit(0)
        return False


class _Server(asyncssh.SSHServer):
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        fastpath.deliver_views(conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def session_requested(self) -> Any:
        return self._conn.create_server_channel(encoding=None), _Digest()


async def test_stream_survives_rekeys_with_the_patched_path(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    asyncssh.set_debug_level(1)
    assert fastpath.install()
    host, client = generate_key(), generate_key()
    acceptor = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=_Server, server_host_keys=[host],
        authorized_client_keys=asyncssh.import_authorized_keys(public_openssh(client) + "\n"),
        encryption_algs=[CIPHER], rekey_bytes=256 * 1024)
    try:
        port = acceptor.get_port()
        known = asyncssh.import_known_hosts(f"[127.0.0.1]:{port} {public_openssh(host)}\n")
        data = os.urandom(8 * MiB + 12345)
        async with asyncssh.connect("127.0.0.1", port, known_hosts=known, client_keys=[client],
                                    username="x", config=[], agent_path=None,
                                    encryption_algs=[CIPHER], rekey_bytes=300 * 1024) as conn:
            writer, reader, _ = await conn.open_session(
                command="digest", encoding=None, window=4 * MiB, max_pktsize=256 * 1024)
            view = memoryview(data)
            for at in range(0, len(data), 1_000_003):  # not packet-aligned on purpose
                writer.write(view[at: at + 1_000_003])
                await writer.drain()
            writer.write_eof()
            answer = (await asyncio.wait_for(reader.read(), 60)).decode()
        digest, types = answer.split()
        assert digest == hashlib.sha256(data).hexdigest()
        # delivered without the copies (a packet decrypted right after a rekey may be bytes)
        assert "memoryview" in types.split(",")
        rekeys = sum("Completed key exchange" in r.getMessage() for r in caplog.records)
        assert rekeys >= 2 * 10  # both ends, many times over the 8 MiB
    finally:
        acceptor.close()
        await acceptor.wait_closed()
