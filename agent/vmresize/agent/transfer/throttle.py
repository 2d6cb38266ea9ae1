"""The bandwidth limit of migration traffic: an asyncio token bucket and the host's bucket.

The host's limit (``Host.spec.migrationBandwidthMiBps``) is two buckets per agent process,
both at that limit, like a full-duplex NIC: :func:`host_bucket`, shared by every disk this
agent sends, and :func:`host_receive_bucket`, shared by every disk arriving at it. In and
out are limited separately, not together: a host that sends one disk while it receives
another runs each at the limit, and a copy between two limited hosts runs at the limit
(not half of it). A send may add its own bucket (the resize's limit, already no higher
than either host's). The sender takes before it writes a chunk to the SSH channel; the
receiver takes as data arrives and stops reading the channel while it owes, so SSH flow
control slows the senders; the receive bucket is what holds several copies arriving from
different sources to the destination's limit together. The bucket is pure apart from
``sleep``; the clock and the sleep are injected so it is tested without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from vmresize.agent.transfer.sparse import READ_CHUNK

__all__ = ["MiB", "TokenBucket", "host_bucket", "host_receive_bucket", "receive_bucket",
           "set_host_limit"]

MiB = 1024 * 1024
BURST_SECONDS = 0.25
"""The bucket holds this many seconds of traffic: a 4 MiB chunk at a small limit still
passes (a take larger than the bucket waits until the debt is paid), and an idle transfer
cannot burst far above the limit when it resumes."""
RECEIVE_BURST = READ_CHUNK
"""A receive bucket holds at least one chunk of a sender: a paced sender writes a whole
chunk at once, and a receiver that owed for part of each would run a fraction of a chunk
behind it, which in series with the sender's own limit is lost time (10% of a 24 MiB copy)."""


class TokenBucket:
    """``rate`` bytes a second; ``None`` means unlimited. Tokens may go negative: a take
    larger than what is held is allowed at once and the next take waits for the debt, so
    the average rate is exact whatever the chunk size."""

    def __init__(self, rate: float | None, *, min_burst: int = 0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._clock, self._sleep = clock, sleep
        self._min_burst = min_burst  # bytes the bucket holds at least, whatever the rate
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
        """Change the limit (the Host's spec changed); what is held is capped to the new burst,
        and lifting the limit forgives what is owed (a later limit starts without that debt)."""
        if rate is not None and rate <= 0:
            raise ValueError(f"a bandwidth limit must be positive, not {rate}")
        self._refill()
        self._rate = rate
        self._tokens = 0.0 if rate is None else min(self._tokens, self._burst())

    def _burst(self) -> float:
        return 0.0 if self._rate is None else max(self._rate * BURST_SECONDS, self._min_burst)

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
_HOST_IN: TokenBucket | None = None


def host_bucket() -> TokenBucket:
    """This agent's send bucket: the host's limit, shared by all its sends (one per process)."""
    global _HOST
    if _HOST is None:
        _HOST = TokenBucket(None)
    return _HOST


def receive_bucket(rate: float | None) -> TokenBucket:
    """A bucket for a receiving side, ``rate`` bytes a second (it holds a sender's chunk)."""
    return TokenBucket(rate, min_burst=RECEIVE_BURST)


def host_receive_bucket() -> TokenBucket:
    """This agent's receive bucket: the host's limit, shared by all the disks arriving at it
    (one per process; the migration server takes from it, see the module docstring)."""
    global _HOST_IN
    if _HOST_IN is None:
        _HOST_IN = receive_bucket(None)
    return _HOST_IN


def set_host_limit(mib_per_second: float | None) -> None:
    """Apply the Host's ``spec.migrationBandwidthMiBps`` (``None``: unlimited) to both the
    send and the receive bucket."""
    rate = None if mib_per_second is None else mib_per_second * MiB
    host_bucket().set_rate(rate)
    host_receive_bucket().set_rate(rate)
