"""SSH connections from a sending agent to its peers' migration servers.

``host_key`` is the receiver's OpenSSH public key line (``Host.status.hostKey``); it is
the only key trusted for a connection (a known_hosts built from it; host key checking is
never switched off). :class:`Connections` lets the sends of one step share a connection to
a peer (a handshake costs 30-50 ms under load): opened on first use, dropped when a leg on
it fails, closed when the step ends.
"""

from __future__ import annotations

import asyncio

import asyncssh

from vmresize.agent.transfer.keys import parse_public_key
from vmresize.agent.transfer.protocol import ENCRYPTION_ALGS

__all__ = ["CONNECT_TIMEOUT", "SSH_USER", "Connections", "known_hosts"]

SSH_USER = "vmresize"
CONNECT_TIMEOUT = 30.0
CLOSE_SECONDS = 5.0
"""How long closing a connection may wait for the peer before it is aborted."""


def known_hosts(address: str, port: int, host_key: str) -> asyncssh.SSHKnownHosts:
    """Known hosts trusting only ``host_key`` for ``address:port``."""
    key = parse_public_key(host_key)  # raises HostKeyError on garbage
    pattern = address if port == 22 else f"[{address}]:{port}"
    line = pattern + " " + key.export_public_key("openssh").decode("ascii").strip()
    return asyncssh.import_known_hosts(line + "\n")


class Connections:
    """SSH connections to migration peers, each reused until it fails or :meth:`close`.

    Keyed by (address, port, pinned host key): a connection is only reused for the very
    host key it was verified with. All sends through one instance use one client key."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int, str], asyncssh.SSHClientConnection] = {}
        self._lock = asyncio.Lock()

    async def get(self, address: str, port: int, host_key: str, key: asyncssh.SSHKey
                  ) -> asyncssh.SSHClientConnection:
        """The live connection to that peer, opened now if there is none."""
        async with self._lock:  # two sends never race to open two connections
            conn = self._conns.get((address, port, host_key))
            if conn is not None and not conn.is_closed():
                return conn
            conn = await asyncssh.connect(
                address, port, known_hosts=known_hosts(address, port, host_key),
                client_keys=[key], username=SSH_USER, config=[], agent_path=None,
                password=None, kbdint_auth=False, gss_host=None, preferred_auth="publickey",
                encryption_algs=list(ENCRYPTION_ALGS), compression_algs=["none"],
                connect_timeout=CONNECT_TIMEOUT, keepalive_interval=15,
                keepalive_count_max=4)
            self._conns[(address, port, host_key)] = conn
            return conn

    def drop(self, conn: asyncssh.SSHClientConnection) -> None:
        """Abort ``conn`` (a leg on it failed: its state is unknown); the next get reconnects."""
        for k, c in list(self._conns.items()):
            if c is conn:
                del self._conns[k]
        conn.abort()

    async def close(self) -> None:
        """Close every connection (the step ended)."""
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        for conn in conns:
            try:  # a frozen peer never confirms: the step must end all the same
                async with asyncio.timeout(CLOSE_SECONDS):
                    await conn.wait_closed()
            except TimeoutError:
                conn.abort()
            except (asyncssh.Error, OSError):
                pass
