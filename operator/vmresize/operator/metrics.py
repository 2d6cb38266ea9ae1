"""Prometheus metrics of the operator, served on ``VMRESIZE_METRICS_PORT``.

- ``vmresize_resize_phase_transitions_total{phase}``: resizes entering each phase.
- ``vmresize_resizes_finished_total{outcome}``: resizes reaching a terminal phase.
- ``vmresize_resize_phase_duration_seconds{phase}``: time spent in each phase.
- ``vmresize_resize_downtime_seconds``: VM powered-off time reported by MigrateDisk.

Counters start from zero in each operator process (as usual for Prometheus).
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Histogram, start_http_server

from vmresize.api.resize import TERMINAL_PHASES, ResizePhase

TRANSITIONS = Counter("vmresize_resize_phase_transitions_total",
                      "Resizes entering each phase", ["phase"])
FINISHED = Counter("vmresize_resizes_finished_total",
                   "Resizes reaching a terminal phase", ["outcome"])
PHASE_SECONDS = Histogram("vmresize_resize_phase_duration_seconds",
                          "Time a resize spent in a phase", ["phase"],
                          buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400))
DOWNTIME = Histogram("vmresize_resize_downtime_seconds",
                     "How long the VM was powered off for the move",
                     buckets=(0.25, 0.5, 1, 1.5, 2, 5, 10, 30, 60, 300))


def transition(old: ResizePhase, new: ResizePhase, entered_old: datetime | None,
               now: datetime, downtime: float | None) -> None:
    """Record one phase change."""
    TRANSITIONS.labels(new.value).inc()
    if entered_old is not None:
        PHASE_SECONDS.labels(old.value).observe(max(0.0, (now - entered_old).total_seconds()))
    if new in TERMINAL_PHASES:
        FINISHED.labels(new.value).inc()
    if new is ResizePhase.FINISHING and downtime is not None:
        DOWNTIME.observe(downtime)


def serve(port: int, address: str) -> None:
    """Start the Prometheus HTTP server on ``address``:``port`` in a background thread; port 0 turns
    it off."""
    if port > 0:
        start_http_server(port, addr=address)
