"""The migration bandwidth token bucket, on an injected clock (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from vmresize.agent.transfer.throttle import (
    BURST_SECONDS,
    RECEIVE_BURST,
    MiB,
    TokenBucket,
    host_bucket,
    host_receive_bucket,
    set_host_limit,
)


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


def test_the_hosts_limit_holds_sends_and_receives_separately() -> None:
    # Full duplex: the host's limit applies to what it sends and, apart, to what it
    # receives; a debt in one direction does not slow the other.
    out, inc = host_bucket(), host_receive_bucket()
    try:
        set_host_limit(8)
        assert out is not inc
        assert out.rate == inc.rate == 8 * MiB
        assert out.delay(16 * MiB) > 0
        assert inc.delay(1) < 0.01  # sharing one bucket, it would owe the 2 s sent
    finally:
        set_host_limit(None)  # the process's buckets: leave them unlimited for other tests
    assert host_bucket().rate is None
    assert host_receive_bucket().rate is None


def test_a_debt_does_not_outlive_a_lifted_limit() -> None:
    clock = Clock()
    bucket = TokenBucket(8 * MiB, clock=clock, sleep=clock.sleep)
    assert bucket.delay(16 * MiB) == pytest.approx(2.0)
    bucket.set_rate(None)  # the admin lifts the limit, then sets one again
    bucket.set_rate(8 * MiB)
    assert bucket.delay(8 * MiB) == pytest.approx(1.0)  # not 3 s: the old 2 s are gone


def test_a_receive_bucket_holds_a_whole_chunk_of_a_paced_sender() -> None:
    # At 8 MiB/s the burst is 2 MiB, but a limited sender writes 4 MiB chunks at once
    # every half second; the receiver takes each without owing, so it does not run behind.
    clock = Clock()
    bucket = TokenBucket(8 * MiB, min_burst=RECEIVE_BURST, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        clock.now += RECEIVE_BURST / (8 * MiB)
        assert bucket.delay(RECEIVE_BURST) == 0.0
    clock.now += 60.0  # idle: still no more than the one chunk
    assert bucket.delay(RECEIVE_BURST + MiB) == pytest.approx(1 / 8)
