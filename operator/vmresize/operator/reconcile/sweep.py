"""Releasing what nobody holds any more: Host claims and Instance locks of gone holders.

Every holder releases its own claims and locks as part of its steps; this is the net under
that for what a race or a removed finalizer can leave behind. Holders are found by the
``consumer`` name of a claim (or the lock's resize name) and must have the UID the claim
key (or lock) carries: a new object of the same name is another holder.

A claim is released when its holder is gone, when it is a VMResize's and that resize is
finished with nothing left to do (a RollbackFailed one keeps its claims until deleted),
or when it is an unlocked Instance's on a host that is not the instance's.
Keys in the pre-UID form ``<Kind>/<namespace>/<name>`` are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmresize.api.host import Allocation
from vmresize.api.instance import Instance, InstancePhase
from vmresize.api.resize import ResizePhase, VMResize
from vmresize.operator.decisions import lifecycle
from vmresize.operator.persistence import claims
from vmresize.operator.persistence.storage import Storage

Lookup = Callable[[str, str], Any]   # (namespace, name) -> the object, or None


def _orphan(host: str, key: str, alloc: Allocation, resize_of: Lookup,
            instance_of: Lookup) -> bool:
    kind, _, uid = key.partition("/")
    ns, _, name = alloc.consumer.partition("/")
    if "/" in uid or not name:
        return False
    if kind == "VMResize":
        r: VMResize | None = resize_of(ns, name)
        if r is None or r.uid != uid:
            return True
        st = r.status
        return (st is not None and lifecycle.is_terminal(st.phase) and not st.pending
                and st.phase is not ResizePhase.ROLLBACK_FAILED)
    inst: Instance | None = instance_of(ns, name)
    if inst is None or inst.uid != uid:
        return True
    ist = inst.status
    return (ist is not None and not ist.active_resize_uid and not ist.active_resize
            and ist.host != host)


def sweep_claims(storage: Storage) -> list[tuple[str, list[str]]]:
    """Release the orphaned claims on every host; ``(host, keys)`` of those released.

    Suspects are found from the watched Hosts and one list of VMResizes and Instances
    (three requests, however many claims: a per-claim read every sweep cost one request per
    resize and instance); each suspect host is then swept from fresh reads."""
    held = [(h.name, k, a) for h, _ in storage.watched_hosts() if h.status
            for k, a in h.status.allocations.items()]
    if not held:
        return []
    resizes = {(r.namespace, r.name): r for r in storage.resizes()}
    instances = {(i.namespace, i.name): i for i in storage.instances()}
    suspects = sorted({host for host, k, a in held if _orphan(
        host, k, a, lambda ns, n: resizes.get((ns, n)), lambda ns, n: instances.get((ns, n)))})
    out = [(host, sweep_host(storage, host)) for host in suspects]
    return [(host, gone) for host, gone in out if gone]


def sweep_host(storage: Storage, host_name: str) -> list[str]:
    """Release the orphaned claims on one host; returns their keys."""
    host = storage.host(host_name)
    if host is None or host.status is None:
        return []
    gone = [k for k, a in list(host.status.allocations.items())
            if _orphan(host_name, k, a, storage.resize, storage.instance)]
    for k in gone:
        claims.release(storage, host_name, k)
    return gone


def sweep_instance_lock(storage: Storage, namespace: str, name: str) -> bool:
    """Release the instance's lock if the resize holding it no longer exists."""
    inst = storage.instance(namespace, name)
    st = inst.status if inst else None
    if inst is None or st is None or not st.active_resize_uid:
        return False
    r = storage.resize(namespace, st.active_resize or "")
    if r is not None and r.uid == st.active_resize_uid:
        return False
    gone = st.active_resize
    inst.status = st.model_copy(update={
        "active_resize": None, "active_resize_uid": None,
        "phase": InstancePhase.ACTIVE if st.phase is InstancePhase.RESIZING else st.phase,
        "message": f"Released the lock of VMResize {gone}, which no longer exists"})
    storage.replace_status(inst)
    return True
