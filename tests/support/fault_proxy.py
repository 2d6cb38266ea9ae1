"""A TCP proxy between two agents' migration services that the fault tests can throttle and cut.

The destination agent advertises the proxy's address and port in its Host status
(``--migration-advertise-address/-port``), so the source agent's SSH connection goes
through it; SSH's host key check still pins the destination's own key, since the proxy only
relays bytes. The proxy counts the bytes it relays towards the destination (the disk
data), which is how a test finds "mid-copy" without racing the API server, slows that
direction to a given rate (so a small disk takes seconds to copy), and can cut every
connection and refuse new ones for a while (a cut link).

It runs its own asyncio loop in a daemon thread; every public method is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

CHUNK = 64 * 1024


class Proxy:
    """See the module docstring."""

    def __init__(self, listen: str, target: str, target_port: int) -> None:
        self.listen, self.target, self.target_port = listen, target, target_port
        self.port = 0
        self.rate: float | None = None  # bytes/s towards the target; None: unthrottled
        self.forwarded = 0  # bytes relayed towards the target since the last reset()
        self.connections = 0  # connections accepted (and relayed) so far
        self.cuts = 0
        self._refuse_until = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Proxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        fut.result(timeout=10)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()
        self._loop.call_soon_threadsafe(close)
        time.sleep(0.1)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def reset(self, rate: float | None = None) -> None:
        """Set the throttle (None: full speed), zero the counter, accept connections."""
        self.rate, self.forwarded, self._refuse_until = rate, 0, 0.0

    def cut(self, hold_seconds: float) -> None:
        """Abort every live connection; refuse new ones for ``hold_seconds``."""
        self._refuse_until = time.monotonic() + hold_seconds
        self.cuts += 1

        def abort() -> None:
            for w in list(self._writers):
                w.transport.abort()
        self._loop.call_soon_threadsafe(abort)

    def wait_bytes(self, n: int, timeout: float) -> bool:
        """Block until ``n`` bytes went towards the target since the last reset()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.forwarded >= n:
                return True
            time.sleep(0.02)
        return False

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(self.target, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers |= {client_w, server_w}
        try:
            await asyncio.gather(self._pump(client_r, server_w, towards_target=True),
                                 self._pump(server_r, client_w, towards_target=False))
        finally:
            for w in (client_w, server_w):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *,
                    towards_target: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await r.read(CHUNK):
                w.write(data)
                await w.drain()
                if towards_target:
                    self.forwarded += len(data)
                    if self.rate:
                        await asyncio.sleep(len(data) / self.rate)
        # One direction ended: end the other too (a relay has no half-open state to keep).
        w.transport.abort()
