"""The bandwidth limit of migration traffic: an asyncio token bucket and the host's bucket.

One :class:`TokenBucket` per agent process (:func:`host_bucket`) is the host's limit
(``Host.spec.migrationBandwidthMiBps``), shared by every disk this agent sends; a send may
add its own bucket (the resize's limit, already no higher than the host's). The sending
side throttles: it is where chunks are written to the SSH channel, and SSH flow control
then holds the receiver to the same rate. The bucket is pure apart from ``sleep``; the
clock and the sleep are injected so it is tested without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["MiB", "TokenBucket", "host_bucket", "set_host_limit"]

MiB = 1024 * 1024
BURST_SECONDS = 0.25
"""The bucket holds this many seconds of traffic: a 4 MiB chunk at a small limit still
passes (a take larger than the bucket waits until the debt is paid), and an idle transfer
cannot burst far above the limit when it resumes."""


class TokenBucket:
    """``rate`` bytes a second; ``None`` means unlimited. Tokens may go negative: a take
    larger than what is held is allowed at once and the next take waits for the debt, so
    the average rate is exact whatever the chunk size."""

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._clock, self._sleep = clock, sleep
        self._rate: float | None = None
        self._tokens = 0.0
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self.set_rate(rate)

    @property
    def rate(self) -> float | None:
        """The limit in bytes a second (None: unlimited)."""
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        """Change the limit (the Host's spec changed); what is held is capped to the new burst."""
        if rate is not None and rate <= 0:
            raise ValueError(f"a bandwidth limit must be positive, not {rate}")
        self._refill()
        self._rate = rate
        self._tokens = min(self._tokens, self._burst())

    def _burst(self) -> float:
        return 0.0 if self._rate is None else self._rate * BURST_SECONDS

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._burst(), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def delay(self, n: int) -> float:
        """Take ``n`` bytes now; the seconds the caller must wait before sending them."""
        self._refill()
        if self._rate is None:
            return 0.0
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes may go out. Takers queue in order (the lock), so a
        transfer sharing the host's bucket cannot starve another. Unlimited: no wait and
        no lock (the bucket of an unlimited host costs its sends nothing)."""
        if self._rate is None:
            return
        async with self._lock:
            wait = self.delay(n)
            if wait > 0:
                await self._sleep(wait)


_HOST: TokenBucket | None = None


def host_bucket() -> TokenBucket:
    """This agent's bucket: the host's limit, shared by all its sends (one per process)."""
    global _HOST
    if _HOST is None:
        _HOST = TokenBucket(None)
    return _HOST


def set_host_limit(mib_per_second: float | None) -> None:
    """Apply the Host's ``spec.migrationBandwidthMiBps`` (``None``: unlimited)."""
    host_bucket().set_rate(None if mib_per_second is None else mib_per_second * MiB)
