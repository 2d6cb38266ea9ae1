"""Claims on Host allocations and the Instance lock, with optimistic concurrency.

A claim is an entry in ``Host.status.allocations`` keyed ``<Kind>/<uid>`` of its holder (a
name can be reused by a new object; a UID cannot), with ``<namespace>/<name>`` as its
``consumer`` for people. The Instance lock is likewise the holder's UID.
Every change reads the Host, decides, and replaces its status with the resourceVersion it
read; a 409 means someone else wrote in between, so we read again and decide again
(re-running the fit check). Two operators (or two resizes) can therefore never both take
the last free slot. All functions are idempotent: a claim that exists is not taken twice,
a release of a missing claim is a no-op.

The first try may start from a copy instead of a read: a Host from the operator's view
(:meth:`~vmresize.operator.persistence.storage.Storage.host_for_update`), the Instance as
this process last read or wrote it. Only a write may follow from such a copy, and it is
guarded by the copy's resourceVersion, so an outdated copy costs a 409 and the fresh read
that would have come first anyway. Every outcome that writes nothing (already claimed,
does not fit, busy) is decided on a fresh read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from vmresize.api.host import Allocation, Host, HostStatus
from vmresize.api.instance import Instance, InstancePhase, InstanceStatus
from vmresize.api.meta import Resources
from vmresize.operator.decisions.scheduler import fits
from vmresize.operator.decisions.views import host_state
from vmresize.operator.errors import ApiConflictError
from vmresize.operator.persistence.hostview import WatchedHost
from vmresize.operator.persistence.storage import Storage

#: Re-reads after a 409 before giving up for now (kopf retries later). Under the test's
#: 50-resizes-on-10-hosts storm a handful of retries is typical.
MAX_CONFLICT_RETRIES = 50

Kind = Literal["Instance", "VMResize"]


def key(kind: Kind, uid: str) -> str:
    """The allocation key of a holder on a Host: ``<Kind>/<uid>``."""
    return f"{kind}/{uid}"


def _update_host(storage: Storage, host_name: str,
                 change: Callable[[Host], bool | None]) -> bool:
    """Read-decide-write loop. ``change`` mutates the host and returns True to write, False
    to refuse (nothing written), None when there is nothing to do."""
    copy = storage.host_for_update(host_name)
    for _ in range(MAX_CONFLICT_RETRIES):
        host, copied, copy = copy or storage.host(host_name), copy is not None, None
        if host is None:
            return False
        if host.status is None:
            host.status = HostStatus()
        decision = change(host)
        if decision is not True and copied:
            continue   # nothing to write, says the copy: ask the Host itself
        if decision is None:
            return True
        if decision is False:
            return False
        try:
            storage.replace_status(host)
            return True
        except ApiConflictError:
            continue
    raise ApiConflictError(f"host {host_name}: too many concurrent writers")


def claim(storage: Storage, host_name: str, claim_key: str, kind: Kind,
          resources: Resources, consumer: str) -> bool:
    """Claim ``resources`` on the host for ``consumer`` (``<namespace>/<name>``, for people);
    False if they do not fit (after a fresh read).

    Every claim is fit-checked, adoptions and forced hosts included: a claim that skipped
    it would over-commit the host behind the scheduler's back (invariant 4)."""

    def change(host: Host) -> bool | None:
        assert host.status is not None
        if claim_key in host.status.allocations:
            return None
        if fits(host_state(host, None), resources.vcpus, resources.memory_mib,
                              resources.disk_gib) is not None:
            return False
        host.status.allocations[claim_key] = Allocation(
            consumer=consumer, kind=kind, resources=resources)
        return True

    return _update_host(storage, host_name, change)


def release(storage: Storage, host_name: str | None, claim_key: str) -> None:
    """Drop ``claim_key`` from the host's allocations; a missing host name or claim is a no-op."""
    if not host_name:
        return

    def change(host: Host) -> bool | None:
        assert host.status is not None
        if host.status.allocations.pop(claim_key, None) is None:
            return None
        return True

    _update_host(storage, host_name, change)


def transfer(storage: Storage, host_name: str, from_key: str, to_key: str, consumer: str,
             drop: str | None = None) -> None:
    """Confirm on ``host_name``: the resize's claim becomes the instance's (and ``drop``, the
    instance's old claim on the same host for a same-host resize, goes in the same write)."""

    def change(host: Host) -> bool | None:
        assert host.status is not None
        allocs = host.status.allocations
        moving = allocs.get(from_key)
        if moving is None and (drop is None or drop not in allocs):
            return None
        if drop is not None:
            allocs.pop(drop, None)
        if moving is not None:
            allocs.pop(from_key)
            allocs[to_key] = Allocation(consumer=consumer, kind="Instance",
                                        resources=moving.resources)
        return True

    _update_host(storage, host_name, change)


def find_claim(hosts: list[WatchedHost], claim_key: str) -> str | None:
    """The host holding ``claim_key``, if any (a claim made just before a crash)."""
    for h, _ in hosts:
        if h.status and claim_key in h.status.allocations:
            return h.name
    return None


def lock_instance(storage: Storage, namespace: str, name: str, resize: str, resize_uid: str,
                  ) -> Instance | Literal["missing", "busy", "notready", "deleting"]:
    """Take the instance's lock for the resize ``resize_uid``; idempotent for the holder.
    An instance being deleted is never locked (its Destroy would wait for ever)."""
    copy = storage.recent_instance(namespace, name)
    for _ in range(MAX_CONFLICT_RETRIES):
        inst, copied, copy = copy or storage.instance(namespace, name), copy is not None, None
        if inst is None:
            return "missing"
        st = inst.status or InstanceStatus()
        refused = _lock_refused(inst, st, resize_uid)
        if refused is not None and copied:
            continue   # nothing to write, says the copy: read the Instance itself
        if refused is not None:
            return inst if refused == "held" else refused
        inst.status = st.model_copy(update={"active_resize": resize,
                                            "active_resize_uid": resize_uid,
                                            "phase": InstancePhase.RESIZING,
                                            "message": f"Being resized by {resize}"})
        try:
            return storage.replace_status(inst)
        except ApiConflictError:
            continue
    raise ApiConflictError(f"instance {namespace}/{name}: too many concurrent writers")


def _lock_refused(inst: Instance, st: InstanceStatus, resize_uid: str,
                  ) -> Literal["held", "busy", "notready", "deleting"] | None:
    if st.active_resize_uid == resize_uid:
        return "held"
    if st.active_resize_uid or st.active_resize:
        return "busy"
    if inst.metadata.get("deletionTimestamp"):
        return "deleting"
    if st.phase.value != "Active" or not st.host:
        return "notready"
    return None


def update_instance(storage: Storage, namespace: str, name: str, resize_uid: str,
                    change: Callable[[InstanceStatus], InstanceStatus]) -> None:
    """Change the Instance's status if (and only if) ``resize_uid`` holds its lock; a change
    that changes nothing writes nothing (a redone effect costs one read)."""
    for _ in range(MAX_CONFLICT_RETRIES):
        inst = storage.instance(namespace, name)
        if inst is None or inst.status is None or inst.status.active_resize_uid != resize_uid:
            return
        new = change(inst.status)
        if new.model_dump(exclude={"conditions"}) == inst.status.model_dump(
                exclude={"conditions"}):
            return
        inst.status = new
        try:
            storage.replace_status(inst)
            return
        except ApiConflictError:
            continue
    raise ApiConflictError(f"instance {namespace}/{name}: too many concurrent writers")
