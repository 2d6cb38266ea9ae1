"""Driving one Instance one step: place it, claim, Spawn/Adopt, then Destroy on delete.

Same shape as :mod:`vmresize.operator.reconcile.engine`: decide, record, then act. The
chosen host is written (``status.host``) before it is claimed, and ``status.currentTask``
before the Spawn, Adopt or Destroy task of that name is created; every act is idempotent,
so a crash or a 409 anywhere makes the next step redo it. Phases: Pending -> (host chosen,
claimed) -> Building -> Active, or Error; deletion -> Deleting (Destroy) -> claim released.
Before any host is chosen, the namespace's VMQuota is charged (refused: Error,
``QuotaExceeded``); the charge goes after the claim, on deletion.
An instance held by a resize waits, and says so; a lock whose resize is gone is released.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vmresize.api import naming
from vmresize.api.hosttask import TaskAction, TaskPhase
from vmresize.api.instance import Instance, InstancePhase, InstanceStatus, PowerState
from vmresize.api.quota import QuotaCharge
from vmresize.operator.decisions import conditions
from vmresize.operator.decisions.quota import QUOTA_EXCEEDED
from vmresize.operator.decisions.scheduler import (
    NoValidHost,
    Request,
    Weights,
    select,
    selector_from_extra_specs,
)
from vmresize.operator.decisions.tasks import instance_task
from vmresize.operator.errors import NotReady
from vmresize.operator.persistence import claims, quota
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile.engine import Outcome
from vmresize.operator.settings import Settings

IP = InstancePhase
ADOPT_REFUSED = "DomainAlreadyOwned"
"""Reason (Ready condition and Event) of an Adopt refused because another Instance owns it."""


def _write(storage: Storage, inst: Instance, st: InstanceStatus, now: datetime,
           reason: str = "") -> Instance:
    """Write ``st`` (with its Ready condition) as the Instance's status; the written object."""
    st.conditions = conditions.instance_conditions(st.conditions, st.phase, st.message, now,
                                                   reason)
    inst.status = st
    return storage.replace_status(inst)


def _key(inst: Instance) -> str:
    return claims.key("Instance", inst.uid)


def _build_action(inst: Instance) -> TaskAction:
    return TaskAction.ADOPT if inst.spec.adopt else TaskAction.SPAWN


def _choose(storage: Storage, settings: Settings, inst: Instance,
            now: datetime) -> str | NoValidHost:
    flavor = storage.flavor(inst.spec.flavor)
    assert flavor is not None
    if inst.spec.host is not None:
        return inst.spec.host   # a named host is an admin's act
    res = flavor.spec.resources()
    req = Request(vcpus=res.vcpus, memory_mib=res.memory_mib, disk_gib=res.disk_gib,
                  clock=storage.clock(),
                  heartbeat_stale_seconds=settings.heartbeat_stale_seconds,
                  selector=selector_from_extra_specs(flavor.spec.extra_specs),
                  max_alternates=0)
    out = select([state for _, state in storage.watched_hosts()], req,
                 Weights(settings.ram_weight_multiplier, settings.cpu_weight_multiplier,
                         settings.disk_weight_multiplier))
    return out if isinstance(out, NoValidHost) else out.host


def _place(storage: Storage, settings: Settings, inst: Instance, now: datetime,
           st: InstanceStatus) -> Outcome:
    flavor = storage.flavor(inst.spec.flavor)
    if flavor is None:
        st.phase, st.message = IP.ERROR, f"Flavor {inst.spec.flavor} does not exist"
        _write(storage, inst, st, now, reason="FlavorNotFound")
        return Outcome(done=True, changed=True,
                       events=[("Warning", "FlavorNotFound", st.message)])
    # The namespace's quota first, before any host is chosen or claimed: refused, the
    # Instance ends in Error with the numbers and nothing else happens.
    refusal = quota.charge(storage, inst.namespace, _key(inst), QuotaCharge(
        consumer=f"{inst.namespace}/{inst.name}", kind="Instance", instances=1,
        resources=flavor.spec.resources()))
    if refusal is not None:
        st.phase, st.message, st.host = IP.ERROR, refusal, None
        _write(storage, inst, st, now, reason=QUOTA_EXCEEDED)
        return Outcome(done=True, changed=True,
                       events=[("Warning", QUOTA_EXCEEDED, st.message)])
    if st.host is None:
        if inst.spec.adopt is not None:
            owner = _adopt_owner(storage, inst)
            if owner is not None:
                return _refuse_adopt(storage, inst, st, now, owner)
        host = _choose(storage, settings, inst, now)
        if isinstance(host, NoValidHost):
            counts = ", ".join(f"{k}: {v}" for k, v in host.counts.items() if v) or "no hosts"
            return _retry(storage, inst, st, now, "NoValidHost",
                          f"No valid host was found ({counts} removed); retrying")
        st.host, st.message = host, f"Claiming resources on {host}"
        inst = _write(storage, inst, st, now)           # record the choice ...
        assert inst.status is not None
        st = inst.status
    # ... then claim on the recorded host. An adopted VM is claimed like any other: its
    # resources are in no allocation yet, so it must fit.
    assert st.host is not None
    if not claims.claim(storage, st.host, _key(inst), "Instance", flavor.spec.resources(),
                        consumer=f"{inst.namespace}/{inst.name}"):
        refused, st.host = st.host, None
        if inst.spec.host is not None:
            st.message = ""
            return _retry(storage, inst, st, now, "DoesNotFit",
                          f"Flavor {inst.spec.flavor} does not fit on host {refused} "
                          "(or the host does not exist); retrying")
        st.message = f"Could not claim on {refused}; choosing again"
        _write(storage, inst, st, now)
        return Outcome(changed=True)
    action = _build_action(inst)
    st.phase, st.message = IP.BUILDING, f"{action} on {st.host}"
    st.current_task = naming.task_name(inst.uid, action, 0)
    inst = _write(storage, inst, st, now)
    storage.create_task(instance_task(action, st.host, namespace=settings.namespace, inst=inst,
                                      flavor=flavor.spec))
    return Outcome(changed=True, events=[("Normal", "Building", st.message)])


def _retry(storage: Storage, inst: Instance, st: InstanceStatus, now: datetime,
           reason: str, msg: str) -> Outcome:
    """Placement cannot happen yet: say so once (status and Event), then retry quietly."""
    if st.message != msg:
        st.message = msg
        _write(storage, inst, st, now, reason=reason)
        return Outcome(events=[("Warning", reason, msg)])
    raise NotReady(f"{inst.namespace}/{inst.name}: {msg}", delay=10)


def _owns(other: Instance, host: str, domain: str) -> bool:
    """Whether ``other`` holds the domain ``domain`` on ``host``: its status names it, or it
    is being built with that very domain (Adopt or Spawn under way)."""
    st = other.status
    if st is None or st.host != host:
        return False
    if st.domain_name == domain:
        return True
    if st.phase is not IP.BUILDING:
        return False
    building = (other.spec.adopt.domain_name if other.spec.adopt
                else naming.domain_name(other.namespace, other.name))
    return building == domain


def _adopt_owner(storage: Storage, inst: Instance) -> Instance | None:
    """Another Instance that already owns the domain ``inst`` asks to adopt, if any."""
    assert inst.spec.adopt is not None
    host, domain = inst.spec.host or "", inst.spec.adopt.domain_name
    for other in storage.instances():
        if other.uid != inst.uid and _owns(other, host, domain):
            return other
    return None


def _refuse_adopt(storage: Storage, inst: Instance, st: InstanceStatus, now: datetime,
                  owner: Instance) -> Outcome:
    """Error, with nothing claimed and no host recorded: deleting this Instance then destroys
    nothing (its Destroy step needs a host and a domain in its status)."""
    assert inst.spec.adopt is not None
    st.phase = IP.ERROR
    st.message = (f"domain {inst.spec.adopt.domain_name} on host {inst.spec.host} is owned by "
                  f"Instance {owner.namespace}/{owner.name}; a domain that an Instance owns "
                  "is never adopted again")
    _write(storage, inst, st, now, reason=ADOPT_REFUSED)
    return Outcome(done=True, changed=True, events=[("Warning", ADOPT_REFUSED, st.message)])


def _built(storage: Storage, settings: Settings, inst: Instance, now: datetime,
           st: InstanceStatus) -> Outcome:
    action = _build_action(inst)
    name = naming.task_name(inst.uid, action, 0)
    if st.current_task != name:   # made by an operator that did not record it
        st.current_task = name
        inst = _write(storage, inst, st, now)
    task = storage.task(settings.namespace, name)
    if task is None:
        flavor = storage.flavor(inst.spec.flavor)
        storage.create_task(instance_task(action, st.host or "", namespace=settings.namespace,
                                          inst=inst, flavor=flavor.spec if flavor else None))
        return Outcome()
    ts = task.status
    if ts is None or ts.phase in (TaskPhase.PENDING, TaskPhase.RUNNING):
        return Outcome()
    if ts.phase is TaskPhase.FAILED:
        host = st.host
        st.phase, st.message = IP.ERROR, f"{action} on {host} failed: {ts.message}"
        st.host, st.current_task = None, None
        _write(storage, inst, st, now)
        claims.release(storage, host, _key(inst))
        quota.release(storage, inst.namespace, _key(inst))
        return Outcome(done=True, changed=True,
                       events=[("Warning", f"{action}Failed", st.message)])
    res = ts.result
    flavor = storage.flavor(inst.spec.flavor)
    f = flavor.spec if flavor else None
    upd: dict[str, Any] = {
        "phase": IP.ACTIVE, "flavor": inst.spec.flavor, "current_task": None,
        "vcpus": res.vcpus or (f.vcpus if f else None),
        "memory_mib": res.memory_mib or (f.memory_mib if f else None),
        "disk_gib": res.disk_gib or (f.disk_gib if f else None),
        "domain_name": res.domain_name or task.spec.domain_name,
        "disk_path": res.disk_path or task.spec.disk_path,
        "disks": res.disks or [],
        "interfaces": task.spec.interfaces,
        "power_state": PowerState(res.power_state) if res.power_state in set(PowerState)
        else PowerState.RUNNING,
        "message": f"{action} on {st.host} done"}
    st = st.model_copy(update=upd)
    _write(storage, inst, st, now)
    return Outcome(done=True, changed=True, events=[("Normal", "Active", st.message)])


def _held(storage: Storage, inst: Instance, st: InstanceStatus, now: datetime) -> Outcome:
    """Deleting an instance a resize holds: release a lock whose resize is gone, else wait
    for the resize and say so (once) in the status and an Event."""
    r = storage.resize(inst.namespace, st.active_resize or "")
    uid = st.active_resize_uid
    if r is None or (uid is not None and r.uid != uid):
        st.active_resize, st.active_resize_uid = None, None
        st.message = "Released the lock of a VMResize that no longer exists"
        _write(storage, inst, st, now)
        return Outcome(changed=True, events=[("Normal", "LockReleased", st.message)])
    msg = (f"Deletion waits for VMResize {st.active_resize}, which holds this instance; it "
           "goes on once that resize ends (or is deleted and rolled back)")
    if st.message != msg:
        st.message = msg
        _write(storage, inst, st, now)
        return Outcome(events=[("Warning", "DeletionWaitsForResize", msg)])
    raise NotReady(f"instance {inst.name} is held by VMResize {st.active_resize}", delay=5)


def _destroy(storage: Storage, settings: Settings, inst: Instance, now: datetime,
             st: InstanceStatus) -> Outcome:
    if st.active_resize_uid or st.active_resize:
        return _held(storage, inst, st, now)
    if st.host and st.domain_name:
        name = naming.task_name(inst.uid, TaskAction.DESTROY, 0)
        if st.current_task != name:
            st.phase, st.current_task = IP.DELETING, name
            st.message = f"Destroying on {st.host}"
            inst = _write(storage, inst, st, now)   # record, then create
        task = storage.task(settings.namespace, name)
        if task is None:
            storage.create_task(instance_task(TaskAction.DESTROY, st.host,
                                              namespace=settings.namespace, inst=inst,
                                              flavor=None))
            return Outcome(changed=True)
        if task.status is None or task.status.phase is not TaskPhase.SUCCEEDED:
            if task.status is not None and task.status.phase is TaskPhase.FAILED:
                raise NotReady(f"Destroy on {st.host} failed: {task.status.message}; an admin "
                               "must delete the failed HostTask to retry", delay=30)
            return Outcome()
    key = _key(inst)
    holder = st.host or claims.find_claim(storage.watched_hosts(), key)
    claims.release(storage, holder, key)
    quota.release(storage, inst.namespace, key)   # after the host: never less than it
    return Outcome(done=True, changed=True)


def reconcile(storage: Storage, settings: Settings, namespace: str, name: str,
              now: datetime) -> Outcome:
    """One step of the Instance ``namespace/name``."""
    inst = storage.instance(namespace, name)
    if inst is None:
        return Outcome(done=True)
    st = inst.status or InstanceStatus()
    if inst.metadata.get("deletionTimestamp"):
        return _destroy(storage, settings, inst, now, st)
    if st.phase is IP.PENDING:
        return _place(storage, settings, inst, now, st)
    if st.phase is IP.BUILDING:
        return _built(storage, settings, inst, now, st)
    return Outcome(done=True)
