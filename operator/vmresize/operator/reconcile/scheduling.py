"""Scheduling a VMResize: run the pure scheduler over the Hosts, then claim atomically.

Claim races are expected (many resizes schedule at once): a claim refused after a fresh
read of the host moves on to the next candidate, and when every candidate is gone the
whole decision is taken again from a new read of all hosts, a bounded number of times.
A claim found already held by this resize (made just before a crash) is reused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vmresize.api import naming
from vmresize.api.instance import InstanceStatus
from vmresize.api.resize import Candidate, VMResize, VMResizeStatus
from vmresize.operator.decisions.lifecycle import Kind, Observation
from vmresize.operator.decisions.scheduler import (
    NoValidHost,
    Request,
    Weights,
    select,
    selector_from_extra_specs,
)
from vmresize.operator.decisions.views import host_state
from vmresize.operator.persistence import claims
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.settings import Settings

#: Fresh decisions taken when every chosen host was taken by a concurrent claim.
ROUNDS = 5


def _dest_names(r: VMResize, st: VMResizeStatus, host: str) -> dict[str, Any]:
    """A new disk directory always; a new domain name too when it shares the host."""
    inst = r.spec.instance_name
    suffix = f"resize-{naming.short_uid(r.uid)}" if host == st.source_host else ""
    return {"dest_domain_name": naming.domain_name(r.namespace, inst, suffix),
            "dest_disk_path": naming.disk_path(r.namespace, inst, r.uid)}


def schedule(storage: Storage, settings: Settings, r: VMResize, st: VMResizeStatus,
             now: datetime) -> tuple[Observation, dict[str, Any]]:
    """Choose and claim a destination; the observation is SCHEDULED or NO_VALID_HOST."""
    key = claims.key("VMResize", r.namespace, r.name)
    hosts = storage.hosts()
    held = claims.find_claim(hosts, key)
    if held is not None:
        return Observation(Kind.SCHEDULED, host=held, alternates=tuple(
            a for a in st.alternates if a != held)), _dest_names(r, st, held)
    flavor = storage.flavor(st.new_flavor or "")
    inst = storage.instance(r.namespace, r.spec.instance_name)
    if flavor is None or inst is None:
        return Observation(Kind.NO_VALID_HOST, message="flavor or instance vanished"), {}
    res = flavor.spec.resources()
    if st.attempts > 0:
        # A retry after a failed Prepare: only the alternates chosen the first time (Nova).
        left = list(st.alternates)
        while left:
            h = left.pop(0)
            if claims.claim(storage, h, key, "VMResize", res):
                return (Observation(Kind.SCHEDULED, host=h, alternates=tuple(left)),
                        _dest_names(r, st, h))
        return Observation(Kind.NO_VALID_HOST, counts={"Alternates": len(st.alternates)}), {}
    ist = inst.status or InstanceStatus()
    cold = r.spec.flavor is None or r.spec.flavor == ist.flavor
    req = Request(vcpus=res.vcpus, memory_mib=res.memory_mib, disk_gib=res.disk_gib, now=now,
                  source_host=st.source_host,
                  allow_same_host=settings.allow_resize_to_same_host and not cold,
                  forced_host=r.spec.target_host,
                  selector=selector_from_extra_specs(flavor.spec.extra_specs),
                  exclude=frozenset({st.source_host}) if cold and st.source_host else frozenset(),
                  heartbeat_stale_seconds=settings.heartbeat_stale_seconds,
                  max_alternates=settings.max_attempts - 1)
    weights = Weights(ram=settings.ram_weight_multiplier, cpu=settings.cpu_weight_multiplier,
                      disk=settings.disk_weight_multiplier)
    for _ in range(ROUNDS):
        out = select([host_state(h) for h in hosts], req, weights)
        if isinstance(out, NoValidHost):
            return Observation(Kind.NO_VALID_HOST, counts=out.counts), {}
        order = [out.host, *out.alternates]
        for i, h in enumerate(order):
            if claims.claim(storage, h, key, "VMResize", res):
                extra = _dest_names(r, st, h)
                extra["candidates"] = [Candidate(host=n, weight=w) for n, w in out.weighed]
                return Observation(Kind.SCHEDULED, host=h,
                                   alternates=tuple(order[i + 1:])), extra
        hosts = storage.hosts()
    return Observation(Kind.NO_VALID_HOST, counts={"ClaimRace": len(hosts)}), {}
