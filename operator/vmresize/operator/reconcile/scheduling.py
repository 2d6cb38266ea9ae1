"""Scheduling a VMResize: check the lock is ours, choose a host, then claim it.

Decide, record, then act: a host is chosen by the pure scheduler from the operator's
watch-fed view of all Hosts (:mod:`vmresize.operator.persistence.hostview`) and recorded in
the status (``destHost``, with the alternates) before the claim is made (an effect of that
write, :mod:`vmresize.operator.reconcile.effects`). The claim re-reads the Host and is fit
checked and written guarded by its resourceVersion: it is the only authority, so a view
that lags can only cost a refused claim. The next step finds the claim held (Scheduled)
or refused, and then chooses again without that host. Held: the view shows it (the claim's
own write goes into the view at once; a claim shown there was written, and nothing but
this resize's later steps releases it while the resize exists, so it is still held); not
shown: the chosen Host itself is read (one GET, the authority). Likewise the lock: the
Instance as this process last wrote (or read) it, when that shows the lock of this resize
(:meth:`~vmresize.operator.persistence.storage.Storage.locked_instance`), else a read.
Claims of this resize on any other host are left from an earlier choice (a crash, a
failed Prepare) and are released here. The claim comes with a charge on the namespace's
VMQuota, taken first (:mod:`vmresize.operator.persistence.quota`); a charge refused is seen
here and ends the resize (``QuotaExceeded``).
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api import naming
from vmresize.api.flavor import FlavorSpec
from vmresize.api.instance import Instance
from vmresize.api.quota import QuotaCharge
from vmresize.api.resize import Candidate, VMResize, VMResizeStatus
from vmresize.operator.decisions.lifecycle import Kind, Observation, StatusPatch
from vmresize.operator.decisions.quota import QUOTA_EXCEEDED
from vmresize.operator.decisions.scheduler import (
    NoValidHost,
    Request,
    Weights,
    select,
    selector_from_extra_specs,
)
from vmresize.operator.persistence import claims, quota
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.settings import Settings


def _dest_names(r: VMResize, st: VMResizeStatus, host: str) -> StatusPatch:
    """A new disk directory always; a new domain name too when it shares the host."""
    inst = r.spec.instance_name
    suffix = f"resize-{r.uid}" if host == st.source_host else ""
    return {"dest_domain_name": naming.domain_name(r.namespace, inst, suffix),
            "dest_disk_path": naming.disk_path(r.namespace, inst, r.uid)}


def resize_charge(r: VMResize, new: FlavorSpec) -> QuotaCharge:
    """What the resize ``r`` charges its namespace's quota: its copy on the destination."""
    return QuotaCharge(consumer=f"{r.namespace}/{r.name}", kind="VMResize", instances=0,
                       resources=new.resources())


def lock_refused(inst: Instance | None, r: VMResize) -> Observation | None:
    """None when ``r`` holds the instance's lock; else why it does not."""
    if inst is None:
        return Observation(Kind.INVALID, "InstanceNotFound",
                           f"Instance {r.spec.instance_name} does not exist")
    st = inst.status
    if st is not None and st.active_resize_uid == r.uid:
        return None
    if st is not None and (st.active_resize_uid or st.active_resize):
        return Observation(Kind.BUSY, "InstanceBusy", f"Instance {inst.name} is already being "
                           f"resized by VMResize {st.active_resize}; nothing was changed")
    if inst.metadata.get("deletionTimestamp"):
        return Observation(Kind.INVALID, "InstanceDeleting",
                           f"Instance {inst.name} is being deleted; nothing was changed")
    return Observation(Kind.INVALID, "InstanceNotReady",
                       f"Instance {inst.name} is not Active on a host")


def schedule(storage: Storage, settings: Settings, r: VMResize, st: VMResizeStatus,
             now: datetime) -> tuple[Observation, StatusPatch]:
    """CHOSEN (claim it next), SCHEDULED (claim held), NO_VALID_HOST, or the lock refused."""
    ns, inst = r.namespace, r.spec.instance_name
    refused = lock_refused(storage.locked_instance(ns, inst, r.uid) or storage.instance(ns, inst),
                           r)
    if refused is not None:
        return refused, {}
    key = claims.key("VMResize", r.uid)
    if st.dest_host and st.new_flavor_spec is not None and \
            not quota.charged(storage, ns, key):
        # The destination's charge was refused (another request took the room since
        # Pending): say so, unless there is room again (then claim again below).
        refusal = quota.would_exceed(storage, ns, key, resize_charge(r, st.new_flavor_spec))
        if refusal is not None:
            return Observation(Kind.QUOTA_EXCEEDED, QUOTA_EXCEEDED, refusal), {}
    holders = storage.claim_holders(key)
    for holder in holders:
        if holder != st.dest_host:
            claims.release(storage, holder, key)
    spec = st.new_flavor_spec
    if spec is None:
        return Observation(Kind.NO_VALID_HOST, message="no flavor snapshot"), {}
    tried: set[str] = set()
    if st.dest_host:
        if st.dest_host in holders:
            held = True
        else:   # maybe just not in the view yet: the Host itself says
            dest = storage.host(st.dest_host)
            held = dest is not None and dest.status is not None and \
                key in dest.status.allocations
        if held:
            return (Observation(Kind.SCHEDULED, host=st.dest_host,
                                alternates=tuple(st.alternates)),
                    _dest_names(r, st, st.dest_host))
        tried.add(st.dest_host)   # refused (no longer fits): choose again without it
    if st.attempts > 0:
        # A retry after a failed Prepare: only the alternates chosen the first time (Nova).
        left = [a for a in st.alternates if a not in tried]
        if left:
            return Observation(Kind.CHOSEN, host=left[0], alternates=tuple(left[1:])), {}
        return Observation(Kind.NO_VALID_HOST, counts={"Alternates": len(st.alternates)}), {}
    res = spec.resources()
    cold = r.spec.flavor is None or r.spec.flavor == st.old_flavor
    exclude = set(tried) | ({st.source_host} if cold and st.source_host else set())
    req = Request(vcpus=res.vcpus, memory_mib=res.memory_mib, disk_gib=res.disk_gib,
                  clock=storage.clock(), source_host=st.source_host,
                  allow_same_host=settings.allow_resize_to_same_host and not cold,
                  forced_host=r.spec.target_host,
                  selector=selector_from_extra_specs(spec.extra_specs),
                  exclude=frozenset(exclude),
                  heartbeat_stale_seconds=settings.heartbeat_stale_seconds,
                  max_alternates=settings.max_attempts - 1)
    weights = Weights(ram=settings.ram_weight_multiplier, cpu=settings.cpu_weight_multiplier,
                      disk=settings.disk_weight_multiplier)
    out = select(storage.host_states(), req, weights)
    if isinstance(out, NoValidHost):
        return Observation(Kind.NO_VALID_HOST, counts=out.counts), {}
    return (Observation(Kind.CHOSEN, host=out.host, alternates=out.alternates),
            {"candidates": [Candidate(host=n, weight=w) for n, w in out.weighed]})
