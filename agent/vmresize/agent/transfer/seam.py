"""The disk-copy seam between the executor and the transfer service.

The executor depends only on :class:`Transfer`; :mod:`vmresize.agent.transfer.service` is the
one real adapter (asyncssh), and tests may pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vmresize.api.hosttask import PeerHost

ProgressFn = Callable[[int, int, float], None]
"""(bytes_done, bytes_total, rate in bytes/s)."""


class StepProgress:
    """One step's progress over every file it sends. Each send reports only its own
    (done, total), but a VM has several files and pre-copy sends some before the power-off
    and the rest after: this adds the finished sends' figures to the running one, so that
    whoever watches sees one count for the whole move (and ``plan`` learns its real size)."""

    def __init__(self, report: ProgressFn | None) -> None:
        self._report = report
        self._base = (0, 0)
        self._last = (0, 0)

    def next_send(self) -> ProgressFn | None:
        """The callback for the next send (the previous one's last figures are final)."""
        report = self._report
        if report is None:
            return None
        self._base = (self._base[0] + self._last[0], self._base[1] + self._last[1])
        self._last = (0, 0)

        def one_send(done: int, total: int, rate: float) -> None:
            self._last = (done, total)
            report(self._base[0] + done, self._base[1] + total, rate)
        return one_send


@dataclass(frozen=True)
class StepBandwidth:
    """A MigrateDisk's limits, MiB/s (None: unlimited): ``limit`` for each of its sends,
    ``host`` the source Host's, for the agent's shared buckets (its sends', its receives')."""

    limit: int | None
    host: int | None


@dataclass(frozen=True)
class Received:
    """What the receiving side knows about an incoming disk."""

    complete: bool
    checksum: str | None  # the disk checksum (transfer.sparse), once complete


@dataclass(frozen=True)
class Sent:
    """A verified send."""

    checksum: str
    size_bytes: int


class Transfer(Protocol):
    """The disk copy seam (real adapter: :mod:`vmresize.agent.transfer.service`)."""

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int, *,
               promised: int | None = None) -> None:
        """Destination: accept an incoming disk at ``rel_path`` of at most
        ``apparent_size`` bytes (idempotent); ``promised``: what ``pending_bytes`` counts
        for it until it arrives, if less (a pre-copy overlay's reserve)."""
        ...

    def received(self, transfer_id: str) -> Received | None:
        """Destination: state of an incoming disk (None if unknown)."""
        ...

    def forget(self, transfer_id: str) -> None:
        """Destination: drop the bookkeeping of a transfer."""
        ...

    def pending_bytes(self, directory: Path) -> int:
        """Destination: bytes that accepted, unfinished transfers may still write on the
        filesystem holding ``directory`` (what Prepare must not promise twice)."""
        ...

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        """Source: send ``src`` to ``peer``; returns the verified checksum."""
        ...

    def step(self, bandwidth: StepBandwidth | None = None
             ) -> AbstractAsyncContextManager[None]:
        """The scope of one step: its sends to a peer may share one connection, which
        ends with the scope (the executor enters it around every step); ``bandwidth``:
        the limits its sends run under."""
        ...
