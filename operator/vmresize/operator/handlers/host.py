"""Host events: feed the operator's Host view and keep the claims-versus-capacity gauges.

The operator never writes a Host here. Every Host event goes into the watch-fed
:class:`~vmresize.operator.persistence.hostview.HostView` that scheduling reads, through a
kopf index: kopf runs no other handler or daemon of this operator until every index has
seen the initial list, so no decision is ever taken on a half-filled view after a start.
The same entry turns the Host's status into ``vmresize_host_capacity`` and
``vmresize_host_claimed`` (the agents' heartbeats keep them coming); a deleted Host leaves
both.
"""

from __future__ import annotations

from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.operator import metrics
from vmresize.operator.handlers.memo import shared, shared_or_none


@kopf.index(GROUP, VERSION, "hosts", id="hostview")
async def host_view(body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Put the Host into the view and its gauges (async: on the event loop, before any other
    handler of the event). kopf's own index stays empty: it is here for its start-up gate."""
    entry = shared(memo).hosts.put(body)
    if entry is None:  # not ours to judge here; the scheduler skips it likewise
        return
    h = entry.state
    metrics.host_usage(
        name,
        # Placement's formula; an agent that has not reported capacity yet offers nothing.
        capacity=(max(0.0, (h.vcpus - h.reserved_vcpus) * h.cpu_ratio),
                  max(0.0, (h.memory_mib - h.reserved_memory_mib) * h.ram_ratio),
                  max(0.0, (h.disk_gib - h.reserved_disk_gib) * h.disk_ratio)),
        claimed=(h.used_vcpus, h.used_memory_mib, h.used_disk_gib))


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


# The filter keeps the heartbeats of a fleet from running (and logging) a handler each.
@kopf.on.event(GROUP, VERSION, "hosts", when=_deleted)
async def host_deleted(name: str, memo: kopf.Memo, **_: Any) -> None:
    """A deleted Host leaves the view and the gauges (kopf drops it from its index alone)."""
    op = shared_or_none(memo)
    if op is not None:
        op.hosts.remove(name)
    metrics.forget_host(name)
