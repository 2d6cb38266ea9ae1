"""Driving one Instance one step: look, decide (:mod:`.instance_lifecycle`), record, act.

Same beats as :mod:`vmresize.operator.reconcile.engine`. The chosen host is written
(``status.host``) before it is claimed, and ``status.currentTask`` before the Spawn, Adopt
or Destroy task of that name is created; every act is idempotent, so a crash or a 409
anywhere makes the next step redo it. What an Instance does on each look is the pure
table :data:`~vmresize.operator.decisions.instance_lifecycle.TABLE`; this module only
looks, writes and acts. The namespace's VMQuota is charged with the claim, before it
(refused: Error, ``QuotaExceeded``), and released after the host's claim.
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api import naming
from vmresize.api.flavor import FlavorSpec
from vmresize.api.hosttask import TaskAction, TaskPhase
from vmresize.api.instance import Instance, InstancePhase, InstanceStatus
from vmresize.api.quota import QuotaCharge
from vmresize.operator.decisions import conditions, instance_lifecycle
from vmresize.operator.decisions.instance_lifecycle import (
    BuildTask,
    Claim,
    InstanceStep,
    Look,
    Release,
    Seen,
    Stage,
)
from vmresize.operator.decisions.scheduler import (
    NoValidHost,
    Request,
    Weights,
    select,
    selector_from_extra_specs,
)
from vmresize.operator.decisions.tasks import instance_task
from vmresize.operator.errors import NotReadyError
from vmresize.operator.persistence import claims, quota
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile.driver import Outcome
from vmresize.operator.settings import Settings

IP = InstancePhase
#: Decisions one call takes at most: the host chosen (recorded, then claimed), the claim's
#: answer (Building recorded, then the task created); a task's name recorded, then the task.
DECISIONS = 3


def _write(storage: Storage, inst: Instance, st: InstanceStatus, now: datetime,
           reason: str = "") -> Instance:
    """Write ``st`` (with its Ready condition) as the Instance's status; the written object."""
    st = st.model_copy(update={"conditions": conditions.instance_conditions(
        st.conditions, st.phase, st.message, now, reason)})
    return storage.replace_status(inst.model_copy(update={"status": st}))


def _key(inst: Instance) -> str:
    return claims.key("Instance", inst.uid)


def _choose(storage: Storage, settings: Settings, inst: Instance,
            flavor: FlavorSpec) -> str | NoValidHost:
    if inst.spec.host is not None:
        return inst.spec.host   # a named host is an admin's act
    res = flavor.resources()
    req = Request(vcpus=res.vcpus, memory_mib=res.memory_mib, disk_gib=res.disk_gib,
                  clock=storage.clock(),
                  heartbeat_stale_seconds=settings.heartbeat_stale_seconds,
                  selector=selector_from_extra_specs(flavor.extra_specs),
                  max_alternates=0)
    out = select([state for _, state in storage.watched_hosts()], req,
                 Weights(settings.ram_weight_multiplier, settings.cpu_weight_multiplier,
                         settings.disk_weight_multiplier))
    return out if isinstance(out, NoValidHost) else out.host


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


def _stage(inst: Instance, st: InstanceStatus) -> Stage:
    if inst.metadata.get("deletionTimestamp"):
        return Stage.DELETING
    return {IP.PENDING: Stage.PLACING, IP.BUILDING: Stage.BUILDING}.get(st.phase,
                                                                      Stage.SETTLED)


def _look_placing(storage: Storage, settings: Settings, inst: Instance,
                  st: InstanceStatus) -> Seen:
    flavor = storage.flavor(inst.spec.flavor)
    if flavor is None:
        return Seen(Look.FLAVOR_MISSING)
    if st.host is not None:
        return Seen(Look.HOST_RECORDED, flavor=flavor.spec)
    if inst.spec.adopt is not None:
        owner = _adopt_owner(storage, inst)
        if owner is not None:
            return Seen(Look.DOMAIN_OWNED, text=f"{owner.namespace}/{owner.name}")
    host = _choose(storage, settings, inst, flavor.spec)
    if isinstance(host, NoValidHost):
        counts = ", ".join(f"{k}: {v}" for k, v in host.counts.items() if v) or "no hosts"
        return Seen(Look.NO_VALID_HOST, text=counts)
    return Seen(Look.CHOSEN, host=host, flavor=flavor.spec)


def _look_task(storage: Storage, settings: Settings, name: str, st: InstanceStatus) -> Seen:
    """The task ``name`` (recorded first), as the Instance's build or destroy sees it."""
    if st.current_task != name:
        return Seen(Look.TASK_UNRECORDED)
    task = storage.task(settings.namespace, name)
    if task is None:
        return Seen(Look.TASK_MISSING)
    ts = task.status
    if ts is None or ts.phase in (TaskPhase.PENDING, TaskPhase.RUNNING):
        return Seen(Look.TASK_WAITING, task=task)
    if ts.phase is TaskPhase.FAILED:
        return Seen(Look.TASK_FAILED, text=ts.message, task=task)
    return Seen(Look.TASK_SUCCEEDED, task=task)


def _look(storage: Storage, settings: Settings, inst: Instance, st: InstanceStatus,
          stage: Stage) -> Seen:
    """What the Instance's ``stage`` looks at."""
    if stage is Stage.PLACING:
        return _look_placing(storage, settings, inst, st)
    if stage is Stage.BUILDING:
        seen = _look_task(storage, settings, instance_lifecycle.build_task_name(inst), st)
        if seen.look is Look.TASK_SUCCEEDED:   # the flavor fills what the task did not say
            flavor = storage.flavor(inst.spec.flavor)
            return Seen(seen.look, task=seen.task, flavor=flavor.spec if flavor else None)
        return seen
    if stage is Stage.DELETING:
        if st.active_resize_uid or st.active_resize:
            r = storage.resize(inst.namespace, st.active_resize or "")
            uid = st.active_resize_uid
            gone = r is None or (uid is not None and r.uid != uid)
            return Seen(Look.LOCK_ORPHANED if gone else Look.HELD)
        if st.host and st.domain_name:
            return _look_task(storage, settings, instance_lifecycle.destroy_task_name(inst), st)
        return Seen(Look.NOTHING_BUILT)
    return Seen(Look.TICK)


def _act(storage: Storage, settings: Settings, inst: Instance,
         act: Claim | BuildTask | Release, seen: Seen) -> Seen | None:
    """Carry out ``act`` (after the write that names it); a claim's answer, to decide on."""
    if isinstance(act, Claim):
        assert seen.flavor is not None
        consumer = f"{inst.namespace}/{inst.name}"
        # The namespace's quota first (idempotent per Instance), so a refusal leaves no
        # host claim behind; released after the host's claim, never before it.
        refusal = quota.charge(storage, inst.namespace, _key(inst), QuotaCharge(
            consumer=consumer, kind="Instance", instances=1,
            resources=seen.flavor.resources()))
        if refusal is not None:
            return Seen(Look.QUOTA_REFUSED, host=act.host, text=refusal, flavor=seen.flavor)
        ok = claims.claim(storage, act.host, _key(inst), "Instance", seen.flavor.resources(),
                          consumer=consumer)
        return Seen(Look.CLAIMED if ok else Look.CLAIM_REFUSED, host=act.host,
                    flavor=seen.flavor)
    if isinstance(act, BuildTask):
        flavor: FlavorSpec | None = None
        if act.action is not TaskAction.DESTROY:
            if seen.flavor is None:
                found = storage.flavor(inst.spec.flavor)
                flavor = found.spec if found else None
            else:
                flavor = seen.flavor
        storage.create_task(instance_task(act.action, act.host, namespace=settings.namespace,
                                          inst=inst, flavor=flavor))
        return None
    holder = act.host or claims.find_claim(storage.watched_hosts(), _key(inst))
    claims.release(storage, holder, _key(inst))
    quota.release(storage, inst.namespace, _key(inst))   # after the host: never less than it
    return None


def reconcile(storage: Storage, settings: Settings, namespace: str, name: str,
              now: datetime) -> Outcome:
    """One step of the Instance ``namespace/name``: look, decide, record, act (a step that
    records a choice, or a task's name, looks once more; a claim's answer is decided on)."""
    inst = storage.instance(namespace, name)
    if inst is None:
        return Outcome(done=True)
    st = inst.status or InstanceStatus()
    stage = _stage(inst, st)
    seen: Seen | None = _look(storage, settings, inst, st, stage)
    step = InstanceStep()
    for _ in range(DECISIONS):
        assert seen is not None
        step = instance_lifecycle.step(inst, st, stage, seen)
        if step.wait is not None:
            raise NotReadyError(f"{inst.namespace}/{inst.name}: {step.text}"
                                if stage is Stage.PLACING else step.text, delay=step.wait)
        if step.status is not None:
            inst = _write(storage, inst, step.status, now, step.reason)   # record ...
            assert inst.status is not None
        follow = (_act(storage, settings, inst, step.act, seen)      # ... then act
                  if step.act is not None else None)
        st = inst.status or InstanceStatus()
        if follow is not None:
            seen = follow
        elif step.again:
            seen = _look(storage, settings, inst, st, stage)
        else:
            break
    return Outcome(done=step.done, changed=step.changed, events=list(step.events))
