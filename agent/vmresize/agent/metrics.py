"""Prometheus metrics of the agent, served on ``VMRESIZE_METRICS_PORT``.

- ``vmresize_agent_transfer_bytes_total{direction}``: disk data bytes put on the wire
  (``sent``, by the source) or written to the partial file (``received``, by the
  destination). Holes are neither sent nor counted.
- ``vmresize_agent_transfer_rate_bytes_per_second``: the summed rate of the sends running
  now, as their progress reports it (0 when none runs).
- ``vmresize_agent_step_duration_seconds{action,outcome}``: one HostTask step attempt;
  outcome ``succeeded``, ``retryable`` (the operator may try again), ``failed``, or
  ``cancelled`` (the agent stopped mid-step; the next agent resumes it).
- ``vmresize_agent_errors_total{reason}``: errors by class name from
  :mod:`vmresize.agent.errors` (the innermost one of a chain, so a ``StepError`` wrapping
  a ``ConnectionLostError`` counts as ``ConnectionLostError``); ``Unexpected`` for anything
  else (a bug).
- ``vmresize_agent_tasks_in_flight{action}``: steps running now.
- ``vmresize_agent_transfer_fast_path{reason}``: 1 when the transfer runs on its fast path,
  0 when on asyncssh's own; ``reason`` is the Host's TransferFastPath condition's
  (``SelfTestPassed``, ``SelfTestFailed``, ``Unsupported``, ``Disabled``).

This module sits just above the bottom layer (errors, settings), so the transfer
code, the executor and the kube layer can all record here without importing upward.
Counters start from zero in each agent process, as usual for Prometheus.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from vmresize.agent.errors import AgentError

BYTES = Counter("vmresize_agent_transfer_bytes", "Disk data bytes moved by the migration "
                "service", ["direction"])
BYTES_SENT = BYTES.labels("sent")
BYTES_RECEIVED = BYTES.labels("received")
RATE = Gauge("vmresize_agent_transfer_rate_bytes_per_second",
             "Summed rate of the disk sends running now")
STEP_SECONDS = Histogram("vmresize_agent_step_duration_seconds",
                         "Duration of one HostTask step attempt", ["action", "outcome"],
                         # from a Confirm (well under a second) to a multi-TiB copy
                         buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400))
ERRORS = Counter("vmresize_agent_errors", "Errors by vmresize.agent.errors class", ["reason"])
FAST_PATH = Gauge("vmresize_agent_transfer_fast_path",
                  "1 when the transfer runs on its self-tested fast path, 0 on asyncssh's own",
                  ["reason"])
IN_FLIGHT = Gauge("vmresize_agent_tasks_in_flight", "HostTask steps running now", ["action"])

UNEXPECTED = "Unexpected"
_rates: dict[int, float] = {}
_rates_lock = threading.Lock()  # the scrape runs on the HTTP server's thread


def _total_rate() -> float:
    with _rates_lock:
        return sum(_rates.values())


RATE.set_function(_total_rate)


def reason(exc: BaseException) -> str:
    """The class name of the innermost :class:`AgentError` in ``exc``'s cause chain, or
    ``Unexpected``."""
    found: str = UNEXPECTED
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, AgentError):
            found = type(cur).__name__
        cur = cur.__cause__ or cur.__context__
    return found


def count_error(exc: BaseException) -> None:
    """Count one error under :func:`reason`."""
    ERRORS.labels(reason(exc)).inc()


@dataclass
class StepRecord:
    """One running step: wraps its progress callback to feed the rate gauge."""

    action: str
    _key: int = field(default=0)

    def progress(self, fn: Callable[[int, int, float], None] | None
                 ) -> Callable[[int, int, float], None]:
        """``fn`` (a ``ProgressFn``) that also records the step's current rate."""
        def report(done: int, total: int, rate: float) -> None:
            with _rates_lock:
                _rates[self._key] = max(0.0, rate)
            if fn is not None:
                fn(done, total, rate)
        return report


_next_key = itertools.count(1)


@contextmanager
def step(action: str, *, clock: Callable[[], float] = time.monotonic
         ) -> Iterator[StepRecord]:
    """Time one step attempt of ``action``: in flight while inside, then observed with its
    outcome; an exception also counts as an error (and propagates)."""
    record = StepRecord(action, next(_next_key))
    gauge = IN_FLIGHT.labels(action)
    gauge.inc()
    start = clock()
    outcome = "failed"
    try:
        yield record
        outcome = "succeeded"
    except Exception as e:
        if isinstance(e, AgentError) and e.retryable:
            outcome = "retryable"
        count_error(e)
        raise
    except BaseException:  # CancelledError: a clean stop, not a failure of the step
        outcome = "cancelled"
        raise
    finally:
        gauge.dec()
        with _rates_lock:
            _rates.pop(record._key, None)
        STEP_SECONDS.labels(action, outcome).observe(max(0.0, clock() - start))


def fast_path(active: bool, reason: str) -> None:
    """Record which path the transfer runs on (one ``reason`` label set at a time)."""
    FAST_PATH.clear()
    FAST_PATH.labels(reason).set(1 if active else 0)


def serve(port: int, address: str) -> Any:
    """Start the Prometheus HTTP server on ``address``:``port`` in a background thread; port 0
    turns it off. Returns the server (``shutdown()`` stops it) or None."""
    if port <= 0:
        return None
    server, _thread = start_http_server(port, addr=address)
    return server
