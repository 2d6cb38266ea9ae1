"""The migration bandwidth token bucket, on an injected clock (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from vmresize.agent.transfer.throttle import BURST_SECONDS, MiB, TokenBucket


class Clock:
    """A clock that only moves when the bucket sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_average_rate_is_the_limit_whatever_the_chunk_size() -> None:
    clock = Clock()
    bucket = TokenBucket(8 * MiB, clock=clock, sleep=clock.sleep)
    t0 = clock.now
    for n in (4 * MiB, 1 * MiB, 4 * MiB, 3 * MiB, 4 * MiB, 8 * MiB):  # 24 MiB
        asyncio.run(bucket.take(n))
    assert clock.now - t0 == pytest.approx(24 / 8)  # starts empty: no burst at first


def test_idle_time_buys_at_most_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(8 * MiB, clock=clock, sleep=clock.sleep)
    clock.now += 60.0  # a minute idle
    assert bucket.delay(int(8 * MiB * BURST_SECONDS)) == 0.0  # the burst passes at once
    assert bucket.delay(8 * MiB) == pytest.approx(1.0)        # then the limit again


def test_unlimited_never_waits_and_a_new_limit_applies_at_once() -> None:
    clock = Clock()
    bucket = TokenBucket(None, clock=clock, sleep=clock.sleep)
    assert bucket.delay(1 << 40) == 0.0
    bucket.set_rate(2 * MiB)
    assert bucket.delay(4 * MiB) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        bucket.set_rate(0)


def test_two_senders_share_one_bucket() -> None:
    clock = Clock()
    bucket = TokenBucket(10 * MiB, clock=clock, sleep=clock.sleep)

    async def both() -> None:
        async def sender() -> None:
            for _ in range(5):
                await bucket.take(2 * MiB)
        await asyncio.gather(sender(), sender())

    asyncio.run(both())
    assert clock.now - 100.0 == pytest.approx(20 / 10)  # 20 MiB together at 10 MiB/s
