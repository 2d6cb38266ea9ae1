"""Prometheus metrics of the operator, served on ``VMRESIZE_METRICS_PORT``.

- ``vmresize_resize_phase_transitions_total{phase}``: resizes entering each phase.
- ``vmresize_resizes_finished_total{outcome}``: resizes reaching a terminal phase.
- ``vmresize_resize_phase_duration_seconds{phase}``: time spent in each phase.
- ``vmresize_resize_downtime_seconds``: VM powered-off time, from the moment the source
  was seen shut off (not the power-off request: the wait for the guest is not in it) to
  the destination's start.
- ``vmresize_host_capacity{host,resource}``: what the scheduler may hand out on a Host,
  ``(capacity - reserved) * allocation ratio``, for ``resource`` ``vcpus``, ``memory_mib``
  and ``disk_gib``; ``vmresize_host_claimed{host,resource}``: the sum of its allocations.
  Updated on every Host event (the heartbeat makes one every few seconds); a deleted Host's
  series are removed.

Counters start from zero in each operator process (as usual for Prometheus).
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
HOST_CAPACITY = Gauge("vmresize_host_capacity", "Schedulable capacity of a Host: "
                      "(capacity - reserved) * allocation ratio", ["host", "resource"])
HOST_CLAIMED = Gauge("vmresize_host_claimed", "Resources claimed on a Host by instances and "
                     "in-flight resizes", ["host", "resource"])
HOST_RESOURCES = ("vcpus", "memory_mib", "disk_gib")


def transition(old: ResizePhase, new: ResizePhase, entered_old: datetime | None,
               now: datetime, downtime: float | None) -> None:
    """Record one phase change."""
    TRANSITIONS.labels(new.value).inc()
    if entered_old is not None:
        PHASE_SECONDS.labels(old.value).observe(max(0.0, (now - entered_old).total_seconds()))
    if new in TERMINAL_PHASES:
        FINISHED.labels(new.value).inc()
    if new is ResizePhase.VERIFY_RESIZE and downtime is not None:
        DOWNTIME.observe(downtime)


def host_usage(host: str, capacity: tuple[float, float, float],
               claimed: tuple[float, float, float]) -> None:
    """Record one Host's schedulable capacity and claims (vCPUs, MiB, GiB)."""
    for resource, cap, used in zip(HOST_RESOURCES, capacity, claimed, strict=True):
        HOST_CAPACITY.labels(host, resource).set(cap)
        HOST_CLAIMED.labels(host, resource).set(used)


def forget_host(host: str) -> None:
    """Drop the series of a deleted Host."""
    for resource in HOST_RESOURCES:
        for gauge in (HOST_CAPACITY, HOST_CLAIMED):
            with contextlib.suppress(KeyError):
                gauge.remove(host, resource)


def serve(port: int, address: str) -> None:
    """Start the Prometheus HTTP server on ``address``:``port`` in a background thread; port 0 turns
    it off."""
    if port > 0:
        start_http_server(port, addr=address)
