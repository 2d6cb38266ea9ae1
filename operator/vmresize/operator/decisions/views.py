"""Conversions from API models to the plain data the pure modules decide on."""

from __future__ import annotations

from vmresize.api.host import Host
from vmresize.operator.decisions.scheduler import HostState


def host_state(h: Host, heard: float | None) -> HostState:
    """What the scheduler needs to know about one Host; ``heard``: when the operator saw its
    heartbeat change, on its monotonic clock (:mod:`.liveness`)."""
    st = h.status
    cap = st.capacity if st and st.capacity else None
    used = h.allocated()
    r = h.spec.allocation_ratios
    labels = h.metadata.get("labels") or {}
    return HostState(
        name=h.name,
        enabled=h.spec.enabled,
        ready=bool(st and st.ready),
        heard=heard,
        vcpus=cap.vcpus if cap else 0,
        memory_mib=cap.memory_mib if cap else 0,
        disk_gib=cap.disk_gib if cap else 0,
        cpu_ratio=r.cpu, ram_ratio=r.memory, disk_ratio=r.disk,
        reserved_vcpus=h.spec.reserved.vcpus,
        reserved_memory_mib=h.spec.reserved.memory_mib,
        reserved_disk_gib=h.spec.reserved.disk_gib,
        used_vcpus=used.vcpus, used_memory_mib=used.memory_mib, used_disk_gib=used.disk_gib,
        labels={str(k): str(v) for k, v in labels.items()},
    )
