"""The operator's Host view and its gauges: one thread keeps them, started with the operator.

The operator never writes a Host here. A list and then a watch of Hosts
(:meth:`~vmresize.operator.persistence.storage.Storage.watch_hosts`) keep the watch-fed
:class:`~vmresize.operator.persistence.hostview.HostView` that scheduling reads, and turn
each Host's status into ``vmresize_host_capacity`` and ``vmresize_host_claimed`` (a deleted
Host leaves both). Not a kopf handler: kopf's per-event machinery costs milliseconds per
event and would run for every heartbeat of every Host (tens of seconds to start with
10,000 Hosts); the view is ready after the first list, and until then decisions list the
API themselves.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf

from vmresize.operator import metrics
from vmresize.operator.handlers.memo import shared
from vmresize.operator.persistence.hostview import WatchedHost


def gauges(name: str, entry: WatchedHost | None) -> None:
    """The Host's schedulable capacity and its claims; a gone Host is forgotten."""
    if entry is None:
        metrics.forget_host(name)
        return
    h = entry.state
    metrics.host_usage(
        name,
        # Placement's formula; an agent that has not reported capacity yet offers nothing.
        capacity=(max(0.0, (h.vcpus - h.reserved_vcpus) * h.cpu_ratio),
                  max(0.0, (h.memory_mib - h.reserved_memory_mib) * h.ram_ratio),
                  max(0.0, (h.disk_gib - h.reserved_disk_gib) * h.disk_ratio)),
        claimed=(h.used_vcpus, h.used_memory_mib, h.used_disk_gib))


@kopf.on.startup()
async def start_host_watch(memo: kopf.Memo, **_: Any) -> None:
    """Start the Host watch thread (after ``configure`` stored the state; kopf retries)."""
    op = shared(memo)
    stop = threading.Event()
    memo.host_watch_stop = stop
    thread = threading.Thread(target=op.storage.watch_hosts, args=(op.hosts, gauges, stop),
                              name="host-watch", daemon=True)
    thread.start()
    # Scheduling lists the API itself until the view is filled; wait briefly for it so
    # the first decisions after a start are already cheap.
    await asyncio.to_thread(op.hosts.ready.wait, 30)


@kopf.on.cleanup()
async def stop_host_watch(memo: kopf.Memo, **_: Any) -> None:
    """Stop the Host watch thread at shutdown (it ends within one watch event)."""
    stop = getattr(memo, "host_watch_stop", None)
    if stop is not None:
        stop.set()
