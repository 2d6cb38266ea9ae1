"""Host events: keep the claims-versus-capacity gauges of :mod:`vmresize.operator.metrics`.

The operator never writes a Host here; scheduling reads Hosts on its own. This watch only
turns each Host's status into ``vmresize_host_capacity`` and ``vmresize_host_claimed``
(the agents' heartbeats keep the events coming), and drops them when the Host is deleted.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from vmresize.api.host import Host
from vmresize.api.meta import GROUP, VERSION
from vmresize.operator import metrics
from vmresize.operator.decisions.views import host_state


@kopf.on.event(GROUP, VERSION, "hosts")
def host_metrics(type: str, body: kopf.Body, name: str, **_: Any) -> None:
    """Record the Host's schedulable capacity and its claims; forget a deleted Host."""
    if type == "DELETED":
        metrics.forget_host(name)
        return
    try:
        h = host_state(Host.from_body(body))
    except ValidationError:  # not ours to judge here; the scheduler skips it likewise
        return
    metrics.host_usage(
        name,
        # Placement's formula; an agent that has not reported capacity yet offers nothing.
        capacity=(max(0.0, (h.vcpus - h.reserved_vcpus) * h.cpu_ratio),
                  max(0.0, (h.memory_mib - h.reserved_memory_mib) * h.ram_ratio),
                  max(0.0, (h.disk_gib - h.reserved_disk_gib) * h.disk_ratio)),
        claimed=(h.used_vcpus, h.used_memory_mib, h.used_disk_gib))
