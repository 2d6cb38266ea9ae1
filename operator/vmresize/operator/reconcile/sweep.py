"""Releasing what nobody holds any more: Host claims and Instance locks of gone holders.

Every holder releases its own claims and locks as part of its steps; this is the net under
that for what a race or a removed finalizer can leave behind. Holders are found by the
``consumer`` name of a claim (or the lock's resize name) and must have the UID the claim
key (or lock) carries: a new object of the same name is another holder.

A claim is released when its holder is gone (unless it is a VMResize's whose UID still
locks an instance: the lock sweep left that instance in Error, see
:mod:`vmresize.operator.decisions.gone_holder`), when it is a VMResize's and that resize is
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
from vmresize.operator.decisions import gone_holder, lifecycle
from vmresize.operator.persistence import claims
from vmresize.operator.persistence.storage import Storage

Lookup = Callable[[str, str], Any]   # (namespace, name) -> the object, or None


def _orphan(host: str, key: str, alloc: Allocation, resize_of: Lookup,
            instance_of: Lookup, locked: Callable[[str], bool]) -> bool:
    kind, _, uid = key.partition("/")
    ns, _, name = alloc.consumer.partition("/")
    if "/" in uid or not name:
        return False
    if kind == "VMResize":
        r: VMResize | None = resize_of(ns, name)
        if r is None or r.uid != uid:
            # Gone, but an instance still locked by it was left in Error by the lock sweep
            # (gone_holder): its copies may run on either host, so its claims stay.
            return not locked(uid)
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
    listed = storage.instances()
    instances = {(i.namespace, i.name): i for i in listed}
    locks = {i.status.active_resize_uid for i in listed if i.status}
    suspects = sorted({host for host, k, a in held if _orphan(
        host, k, a, lambda ns, n: resizes.get((ns, n)), lambda ns, n: instances.get((ns, n)),
        locks.__contains__)})
    out = [(host, sweep_host(storage, host)) for host in suspects]
    return [(host, gone) for host, gone in out if gone]


def sweep_host(storage: Storage, host_name: str) -> list[str]:
    """Release the orphaned claims on one host; returns their keys."""
    host = storage.host(host_name)
    if host is None or host.status is None:
        return []
    locks: set[str | None] | None = None

    def locked(uid: str) -> bool:   # one fresh list, and only for a gone resize's claim
        nonlocal locks
        if locks is None:
            locks = {i.status.active_resize_uid for i in storage.instances() if i.status}
        return uid in locks

    gone = [k for k, a in list(host.status.allocations.items())
            if _orphan(host_name, k, a, storage.resize, storage.instance, locked)]
    for k in gone:
        claims.release(storage, host_name, k)
    return gone


def sweep_instance_lock(storage: Storage, namespace: str, name: str,
                        task_namespace: str) -> tuple[str, str, str] | None:
    """Settle the instance whose lock holder no longer exists; the Event to post (type,
    reason, message) if its status changed, else None.

    The gone resize's HostTasks (in ``task_namespace``) say whether the instance still runs
    where ``status.host`` says (:mod:`vmresize.operator.decisions.gone_holder`): then the
    lock is released and the instance is Active; otherwise it goes to Error with the reason
    and keeps the lock."""
    inst = storage.instance(namespace, name)
    st = inst.status if inst else None
    if inst is None or st is None or not st.active_resize_uid:
        return None
    r = storage.resize(namespace, st.active_resize or "")
    if r is not None and r.uid == st.active_resize_uid:
        return None
    verdict = gone_holder.after_gone_resize(
        st.active_resize or st.active_resize_uid, st.host,
        storage.tasks_of(task_namespace, st.active_resize_uid))
    update: dict[str, Any] = {"message": verdict.message}
    if verdict.release_lock:
        update.update(active_resize=None, active_resize_uid=None)
        if st.phase is InstancePhase.RESIZING:
            update["phase"] = InstancePhase.ACTIVE
    else:
        update["phase"] = verdict.phase
    if verdict.power_state is not None:
        update["power_state"] = verdict.power_state
    new = st.model_copy(update=update)
    if new == st:
        return None
    inst.status = new
    storage.replace_status(inst)
    if verdict.release_lock:
        return ("Normal", "LockReleased", verdict.message)
    return ("Warning", "ResizeRemovedUnfinished", verdict.message)
