"""The effects of a VMResize decision on other objects: Host claims and the Instance.

The engine writes them into ``status.pending`` together with the decision (decide, record,
then act: their status form is decided in
:func:`vmresize.operator.decisions.resize_step.effect_of`), carries them out here, and
clears them. Each one is idempotent, so a crash or a
409 anywhere just makes the next step carry them out again from the recorded status.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from vmresize.api import flavordisks, vmdisks
from vmresize.api.flavor import FlavorSpec
from vmresize.api.instance import InstanceStatus
from vmresize.api.resize import Effect, VMResize, VMResizeStatus
from vmresize.operator.decisions import conditions
from vmresize.operator.persistence import claims, orphans, quota
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile import scheduling


def resize_key(r: VMResize) -> str:
    """The claim key of the resize ``r`` on its destination."""
    return claims.key("VMResize", r.uid)


def apply(storage: Storage, r: VMResize, st: VMResizeStatus, now: datetime) -> None:
    """Carry out ``st.pending`` (as recorded) in order."""
    ns, inst_name = r.namespace, r.spec.instance_name
    rkey = resize_key(r)
    for e in st.pending:
        if e.kind == "LockInstance":
            claims.lock_instance(storage, ns, inst_name, r.name, r.uid)
        elif e.kind == "ClaimDest":
            spec = st.new_flavor_spec
            # The quota first: it never holds less than the hosts (a refusal: no claim,
            # and the next step sees it, :mod:`.scheduling`).
            if e.host and spec is not None and quota.charge(
                    storage, ns, rkey, scheduling.resize_charge(r, spec)) is None:
                claims.claim(storage, e.host, rkey, "VMResize", spec.resources(),
                             consumer=f"{ns}/{r.name}")
        elif e.kind == "ReleaseDestClaim":
            # No host recorded: a claim taken just before a crash may still be somewhere.
            holder = e.host or claims.find_claim(storage.watched_hosts(), rkey)
            claims.release(storage, holder, rkey)
            quota.release(storage, ns, rkey)
        elif e.kind == "CommitClaims":
            assert st.dest_host is not None
            assert st.instance_uid is not None
            ikey = claims.key("Instance", st.instance_uid)
            same = st.dest_host == st.source_host
            claims.transfer(storage, st.dest_host, rkey, ikey, consumer=f"{ns}/{inst_name}",
                            drop=ikey if same else None)
            if not same:
                claims.release(storage, st.source_host, ikey)
            quota.transfer(storage, ns, rkey, ikey, consumer=f"{ns}/{inst_name}")
        elif e.kind == "FenceOrphan":
            assert e.host is not None
            assert st.abandoned_destination is not None   # recorded with the decision
            orphans.fence(storage, e.host, r.uid, st.abandoned_destination)
        else:
            claims.update_instance(storage, ns, inst_name, r.uid,
                                   instance_change(e, st, st.new_flavor_spec, now))


def instance_change(e: Effect, st: VMResizeStatus, f: FlavorSpec | None,
                    now: datetime) -> Callable[[InstanceStatus], InstanceStatus]:
    """The change of the Instance's status that an ``UpdateInstance`` effect asks for."""
    def change(s: InstanceStatus) -> InstanceStatus:
        upd: dict[str, Any] = {"phase": e.instance_phase or s.phase, "message": e.message,
                               "power_state": e.power_state or s.power_state}
        if e.unlock:
            upd.update(active_resize=None, active_resize_uid=None)
        if e.placement == "dest":
            moved = vmdisks.landed(st.source_disks) if st.source_disks else []
            if moved and f is not None:  # what Finish made of them (flavordisks)
                moved = flavordisks.plan(moved, f).files
            upd.update(host=st.dest_host, flavor=st.new_flavor, domain_name=st.dest_domain_name,
                       disk_path=moved[0].path if moved else st.dest_disk_path, disks=moved,
                       message=e.message or f"Resized by {s.active_resize}")
            if f is not None:
                upd.update(vcpus=f.vcpus, memory_mib=f.memory_mib,
                           disk_gib=max(f.disk_gib, s.disk_gib or 0))
        new = s.model_copy(update=upd)
        new.conditions = conditions.instance_conditions(s.conditions, new.phase, new.message,
                                                        now)
        return new

    return change
