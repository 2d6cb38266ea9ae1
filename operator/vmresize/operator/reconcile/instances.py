"""Driving one Instance one step: place it, claim, Spawn/Adopt, then Destroy on delete.

Same shape as :mod:`vmresize.operator.reconcile.engine`: idempotent actions, status written last
with the resourceVersion read at the start. The phases are few enough to read inline:
Pending -> (claim, Spawn|Adopt task) Building -> Active, or Error; deletion -> Destroy task
-> release the claim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vmresize.api import naming
from vmresize.api.hosttask import TaskAction, TaskPhase
from vmresize.api.instance import Instance, InstancePhase, InstanceStatus, PowerState
from vmresize.operator.decisions import conditions
from vmresize.operator.decisions.scheduler import (
    NoValidHost,
    Request,
    Weights,
    select,
    selector_from_extra_specs,
)
from vmresize.operator.decisions.tasks import instance_task
from vmresize.operator.decisions.views import host_state
from vmresize.operator.errors import NotReady
from vmresize.operator.persistence import claims
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile.engine import Outcome
from vmresize.operator.settings import Settings

IP = InstancePhase
ADOPT_REFUSED = "DomainAlreadyOwned"
"""Reason (Ready condition and Event) of an Adopt refused because another Instance owns it."""


def _write(storage: Storage, inst: Instance, st: InstanceStatus, now: datetime,
           events: list[tuple[str, str, str]], reason: str = "") -> Outcome:
    st.conditions = conditions.instance_conditions(st.conditions, st.phase, st.message, now,
                                                   reason)
    inst.status = st
    storage.replace_status(inst)
    return Outcome(done=st.phase in (IP.ACTIVE, IP.ERROR), changed=True, events=events)


def _place(storage: Storage, settings: Settings, inst: Instance, now: datetime,
           st: InstanceStatus) -> Outcome:
    flavor = storage.flavor(inst.spec.flavor)
    if flavor is None:
        st.phase, st.message = IP.ERROR, f"Flavor {inst.spec.flavor} does not exist"
        return _write(storage, inst, st, now, [("Warning", "FlavorNotFound", st.message)],
                      reason="FlavorNotFound")
    key = claims.key("Instance", inst.namespace, inst.name)
    res = flavor.spec.resources()
    hosts = storage.hosts()
    host = claims.find_claim(hosts, key)
    adopt = inst.spec.adopt is not None
    if adopt and host is None:
        owner = _adopt_owner(storage, inst)
        if owner is not None:
            return _refuse_adopt(storage, inst, st, now, owner)
    if host is None and inst.spec.host is not None:
        # A named host is an admin's act (the chart's admission policy). An adopted VM is
        # claimed like any other: its resources are not in any allocation yet, so it must
        # fit, or the host would be over-committed behind the scheduler's back.
        if claims.claim(storage, inst.spec.host, key, "Instance", res):
            host = inst.spec.host
        else:
            return _retry(storage, inst, st, now, "DoesNotFit",
                          f"Flavor {inst.spec.flavor} does not fit on host {inst.spec.host} "
                          "(or the host does not exist); retrying")
    elif host is None:
        req = Request(vcpus=res.vcpus, memory_mib=res.memory_mib, disk_gib=res.disk_gib,
                      now=now, heartbeat_stale_seconds=settings.heartbeat_stale_seconds,
                      selector=selector_from_extra_specs(flavor.spec.extra_specs),
                      max_alternates=settings.max_attempts - 1)
        out = select([host_state(h) for h in hosts], req,
                     Weights(settings.ram_weight_multiplier, settings.cpu_weight_multiplier,
                             settings.disk_weight_multiplier))
        if isinstance(out, NoValidHost):
            counts = ", ".join(f"{k}: {v}" for k, v in out.counts.items() if v) or "no hosts"
            return _retry(storage, inst, st, now, "NoValidHost",
                          f"No valid host was found ({counts} removed); retrying")
        for h in (out.host, *out.alternates):
            if claims.claim(storage, h, key, "Instance", res):
                host = h
                break
    if host is None:
        raise NotReady(f"could not claim a host for {inst.name}", delay=2)
    action = TaskAction.ADOPT if adopt else TaskAction.SPAWN
    storage.create_task(instance_task(action, host, namespace=settings.namespace, inst=inst,
                                      flavor=flavor.spec))
    st.phase, st.host, st.message = IP.BUILDING, host, f"{action} on {host}"
    return _write(storage, inst, st, now, [("Normal", "Building", st.message)])


def _retry(storage: Storage, inst: Instance, st: InstanceStatus, now: datetime,
           reason: str, msg: str) -> Outcome:
    """Placement cannot happen yet: say so once (status and Event), then retry quietly."""
    if st.message != msg:
        st.message = msg
        out = _write(storage, inst, st, now, [("Warning", reason, msg)], reason=reason)
        out.changed = False
        return out
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
    return _write(storage, inst, st, now, [("Warning", ADOPT_REFUSED, st.message)],
                  reason=ADOPT_REFUSED)


def _built(storage: Storage, settings: Settings, inst: Instance, now: datetime,
           st: InstanceStatus) -> Outcome:
    action = TaskAction.ADOPT if inst.spec.adopt else TaskAction.SPAWN
    name = naming.task_name(inst.uid, action, 0)
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
        claims.release(storage, st.host, claims.key("Instance", inst.namespace, inst.name))
        st.phase, st.message = IP.ERROR, f"{action} on {st.host} failed: {ts.message}"
        return _write(storage, inst, st, now, [("Warning", f"{action}Failed", st.message)])
    res = ts.result
    flavor = storage.flavor(inst.spec.flavor)
    f = flavor.spec if flavor else None
    upd: dict[str, Any] = {
        "phase": IP.ACTIVE, "flavor": inst.spec.flavor,
        "vcpus": res.vcpus or (f.vcpus if f else None),
        "memory_mib": res.memory_mib or (f.memory_mib if f else None),
        "disk_gib": res.disk_gib or (f.disk_gib if f else None),
        "domain_name": res.domain_name or task.spec.domain_name,
        "disk_path": res.disk_path or task.spec.disk_path,
        "power_state": PowerState(res.power_state) if res.power_state in set(PowerState)
        else PowerState.RUNNING,
        "message": f"{action} on {st.host} done"}
    st = st.model_copy(update=upd)
    return _write(storage, inst, st, now, [("Normal", "Active", st.message)])


def _destroy(storage: Storage, settings: Settings, inst: Instance, now: datetime,
             st: InstanceStatus) -> Outcome:
    key = claims.key("Instance", inst.namespace, inst.name)
    if st.active_resize:
        raise NotReady(f"instance {inst.name} is held by VMResize {st.active_resize}; "
                       "delete or finish that first", delay=5)
    if st.host and st.domain_name:
        name = naming.task_name(inst.uid, TaskAction.DESTROY, 0)
        task = storage.task(settings.namespace, name)
        if task is None:
            storage.create_task(instance_task(TaskAction.DESTROY, st.host,
                                              namespace=settings.namespace, inst=inst,
                                              flavor=None))
            return Outcome()
        if task.status is None or task.status.phase is not TaskPhase.SUCCEEDED:
            if task.status is not None and task.status.phase is TaskPhase.FAILED:
                raise NotReady(f"Destroy on {st.host} failed: {task.status.message}; an admin "
                               "must delete the failed HostTask to retry", delay=30)
            return Outcome()
    holder = st.host or claims.find_claim(storage.hosts(), key)
    claims.release(storage, holder, key)
    return Outcome(done=True, changed=True)


def reconcile(storage: Storage, settings: Settings, namespace: str, name: str,
              now: datetime, deleting: bool = False) -> Outcome:
    """One step of the Instance ``namespace/name``."""
    inst = storage.instance(namespace, name)
    if inst is None:
        return Outcome(done=True)
    st = inst.status or InstanceStatus()
    if deleting:
        return _destroy(storage, settings, inst, now, st)
    if st.phase is IP.PENDING:
        return _place(storage, settings, inst, now, st)
    if st.phase is IP.BUILDING:
        return _built(storage, settings, inst, now, st)
    return Outcome(done=True)
