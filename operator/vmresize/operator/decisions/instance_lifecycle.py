"""The Instance lifecycle as a transition table: ``(stage, look) -> step``, like the resize's.

Pure: no Kubernetes, no clock. :mod:`vmresize.operator.reconcile.instances` looks at the
world for the Instance's stage (placing it, building it, deleting it), calls
:func:`step`, writes the status the step names and only then acts (claim, create the
Spawn/Adopt/Destroy task, release the claim). A step may ask to look again in the same
call (``again``: a task's name is recorded, then the task is looked at), and a claim's
answer is decided on at once (CLAIMED, CLAIM_REFUSED). Phases: Pending -> (host chosen,
claimed) -> Building -> Active, or Error; deletion -> Deleting (Destroy) -> claim
released. An instance held by a resize
waits, and says so; a lock whose resize is gone is released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from vmresize.api import naming
from vmresize.api.flavor import FlavorSpec
from vmresize.api.hosttask import HostTask, TaskAction
from vmresize.api.instance import Instance, InstancePhase, InstanceStatus, PowerState
from vmresize.operator.decisions.quota import QUOTA_EXCEEDED

IP = InstancePhase
ADOPT_REFUSED = "DomainAlreadyOwned"
"""Reason (Ready condition and Event) of an Adopt refused because another Instance owns it."""


class Stage(Enum):
    """Where an Instance is: what a step of it looks at."""

    PLACING = "Placing"       # Pending: choose a host, claim on it, start the build
    BUILDING = "Building"     # the Spawn or Adopt task runs
    DELETING = "Deleting"     # deletionTimestamp: wait for a resize, Destroy, release
    SETTLED = "Settled"       # Active or Error: nothing to do


class Look(Enum):
    """What one look at an Instance found."""

    FLAVOR_MISSING = "FlavorMissing"
    DOMAIN_OWNED = "DomainOwned"          # Adopt of a domain another Instance owns
    NO_VALID_HOST = "NoValidHost"
    CHOSEN = "Chosen"                     # a host chosen, not recorded yet
    HOST_RECORDED = "HostRecorded"        # status.host written: claim on it
    CLAIMED = "Claimed"
    CLAIM_REFUSED = "ClaimRefused"
    QUOTA_REFUSED = "QuotaRefused"        # the namespace's VMQuota has no room: nothing claimed
    TASK_UNRECORDED = "TaskUnrecorded"    # the task's name is not in currentTask yet
    TASK_MISSING = "TaskMissing"
    TASK_WAITING = "TaskWaiting"
    TASK_FAILED = "TaskFailed"
    TASK_SUCCEEDED = "TaskSucceeded"
    LOCK_ORPHANED = "LockOrphaned"        # held by a resize that no longer exists
    HELD = "Held"                         # held by a live resize
    NOTHING_BUILT = "NothingBuilt"        # no host or domain: nothing to destroy
    TICK = "Tick"


@dataclass(frozen=True)
class Seen:
    """One look: ``host`` (the host chosen, or the one that refused the claim), ``text``
    (what is to be said: the filters' counts, the owning Instance, the resize holding the
    lock, the task's message), the ``task`` looked at and the Instance's ``flavor``."""

    look: Look
    host: str | None = None
    text: str = ""
    task: HostTask | None = None
    flavor: FlavorSpec | None = None


@dataclass(frozen=True)
class Claim:
    """Claim the Instance's flavor on ``host`` (guarded; the answer is decided on)."""

    host: str


@dataclass(frozen=True)
class BuildTask:
    """Create the ``action`` task (Spawn, Adopt, Destroy) on ``host`` that the written
    status names."""

    action: TaskAction
    host: str


@dataclass(frozen=True)
class Release:
    """Release the Instance's claim on ``host`` (None: wherever the view shows it)."""

    host: str | None


InstanceAct = Claim | BuildTask | Release


@dataclass(frozen=True)
class InstanceStep:
    """What a rule decided: the ``status`` to write (None: none) with its Ready ``reason``;
    then one act; the events; whether the Instance is ``done``, whether anything
    ``changed``; ``wait`` (seconds) to retry later with ``text`` as the reason instead;
    ``again`` to look once more after the write."""

    status: InstanceStatus | None = None
    reason: str = ""
    act: InstanceAct | None = None
    events: tuple[tuple[str, str, str], ...] = ()
    done: bool = False
    changed: bool = False
    wait: float | None = None
    text: str = ""
    again: bool = False


InstanceRule = Callable[[Instance, InstanceStatus, Seen], InstanceStep]


def build_action(inst: Instance) -> TaskAction:
    """Adopt for an Instance that adopts a domain, else Spawn."""
    return TaskAction.ADOPT if inst.spec.adopt else TaskAction.SPAWN


def build_task_name(inst: Instance) -> str:
    """The deterministic name of the Spawn or Adopt task of ``inst``."""
    return naming.task_name(inst.uid, build_action(inst), 0)


def destroy_task_name(inst: Instance) -> str:
    """The deterministic name of the Destroy task of ``inst``."""
    return naming.task_name(inst.uid, TaskAction.DESTROY, 0)


def _with(st: InstanceStatus, **upd: Any) -> InstanceStatus:
    return st.model_copy(update=upd)


def _retry(st: InstanceStatus, reason: str, msg: str, delay: float) -> InstanceStep:
    """Say once (status and Event) why nothing can happen yet, then retry quietly."""
    if st.message != msg:
        return InstanceStep(_with(st, message=msg), reason=reason,
                            events=(("Warning", reason, msg),))
    return InstanceStep(wait=delay, text=msg)


def flavor_missing(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Error: the Instance names a Flavor that does not exist."""
    msg = f"Flavor {inst.spec.flavor} does not exist"
    return InstanceStep(_with(st, phase=IP.ERROR, message=msg), reason="FlavorNotFound",
                        done=True, changed=True, events=(("Warning", "FlavorNotFound", msg),))


def domain_owned(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Error, with nothing claimed and no host recorded: deleting this Instance then
    destroys nothing (its Destroy step needs a host and a domain in its status)."""
    assert inst.spec.adopt is not None
    msg = (f"domain {inst.spec.adopt.domain_name} on host {inst.spec.host} is owned by "
           f"Instance {seen.text}; a domain that an Instance owns is never adopted again")
    return InstanceStep(_with(st, phase=IP.ERROR, message=msg), reason=ADOPT_REFUSED,
                        done=True, changed=True, events=(("Warning", ADOPT_REFUSED, msg),))


def no_valid_host(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """No host passes the filters: say why once, then retry."""
    return _retry(st, "NoValidHost", f"No valid host was found ({seen.text} removed); "
                  "retrying", delay=10)


def chosen(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Record the choice, then claim on the recorded host."""
    assert seen.host is not None
    return InstanceStep(_with(st, host=seen.host, message=f"Claiming resources on {seen.host}"),
                        act=Claim(seen.host))


def claim(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Claim on the host recorded before (a crash came before its answer). An adopted VM
    is claimed like any other: its resources are in no allocation yet, so it must fit."""
    assert st.host is not None
    return InstanceStep(act=Claim(st.host))


def claimed(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """The claim holds: Building, and the Spawn or Adopt task the status names."""
    assert st.host is not None
    action = build_action(inst)
    msg = f"{action} on {st.host}"
    return InstanceStep(_with(st, phase=IP.BUILDING, message=msg,
                              current_task=build_task_name(inst)),
                        act=BuildTask(action, st.host), changed=True,
                        events=(("Normal", "Building", msg),))


def claim_refused(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """The host refused the claim: choose again (or wait, for a named host)."""
    off = _with(st, host=None)
    if inst.spec.host is not None:
        return _retry(_with(off, message=""), "DoesNotFit",
                      f"Flavor {inst.spec.flavor} does not fit on host {seen.host} "
                      "(or the host does not exist); retrying", delay=10)
    return InstanceStep(_with(off, message=f"Could not claim on {seen.host}; choosing again"),
                        changed=True)


def quota_refused(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Error with the quota's numbers; no host claim was taken (the charge comes first)."""
    return InstanceStep(_with(st, phase=IP.ERROR, message=seen.text, host=None),
                        reason=QUOTA_EXCEEDED, done=True, changed=True,
                        events=(("Warning", QUOTA_EXCEEDED, seen.text),))


def record_build_task(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """A task made by an operator that did not record it: record it, then look at it."""
    return InstanceStep(_with(st, current_task=build_task_name(inst)), again=True)


def create_build_task(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """The recorded build task is missing: create it."""
    return InstanceStep(act=BuildTask(build_action(inst), st.host or ""))


def waiting(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Nothing to do until the task (or the world) changes."""
    return InstanceStep()


def build_failed(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Error with the task's message; the claim goes."""
    action = build_action(inst)
    msg = f"{action} on {st.host} failed: {seen.text}"
    return InstanceStep(_with(st, phase=IP.ERROR, message=msg, host=None, current_task=None),
                        act=Release(st.host), done=True, changed=True,
                        events=(("Warning", f"{action}Failed", msg),))


def built(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Active with what the task reports, the flavor filling in what it does not."""
    task = seen.task
    assert task is not None
    assert task.status is not None
    res, f = task.status.result, seen.flavor
    msg = f"{build_action(inst)} on {st.host} done"
    new = _with(st, phase=IP.ACTIVE, flavor=inst.spec.flavor, current_task=None,
                vcpus=res.vcpus or (f.vcpus if f else None),
                memory_mib=res.memory_mib or (f.memory_mib if f else None),
                disk_gib=res.disk_gib or (f.disk_gib if f else None),
                domain_name=res.domain_name or task.spec.domain_name,
                disk_path=res.disk_path or task.spec.disk_path,
                disks=res.disks or [], interfaces=task.spec.interfaces,
                power_state=PowerState(res.power_state) if res.power_state in set(PowerState)
                else PowerState.RUNNING, message=msg)
    return InstanceStep(new, done=True, changed=True, events=(("Normal", "Active", msg),))


def lock_orphaned(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Deleting, held by a resize that is gone: release the lock."""
    msg = "Released the lock of a VMResize that no longer exists"
    return InstanceStep(_with(st, active_resize=None, active_resize_uid=None, message=msg),
                        changed=True, events=(("Normal", "LockReleased", msg),))


def held(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Deleting, held by a live resize: say so once, then wait for it."""
    msg = (f"Deletion waits for VMResize {st.active_resize}, which holds this instance; it "
           "goes on once that resize ends (or is deleted and rolled back)")
    if st.message != msg:
        return InstanceStep(_with(st, message=msg),
                            events=(("Warning", "DeletionWaitsForResize", msg),))
    return InstanceStep(wait=5, text=f"instance {inst.name} is held by VMResize "
                        f"{st.active_resize}")


def record_destroy(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Record the Destroy task (Deleting), then look at it."""
    return InstanceStep(_with(st, phase=IP.DELETING, current_task=destroy_task_name(inst),
                              message=f"Destroying on {st.host}"), again=True)


def create_destroy(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """The recorded Destroy task is missing: create it."""
    assert st.host is not None
    return InstanceStep(act=BuildTask(TaskAction.DESTROY, st.host), changed=True)


def destroy_failed(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Destroy failed: wait for an admin to delete the failed HostTask."""
    return InstanceStep(wait=30, text=f"Destroy on {st.host} failed: {seen.text}; an admin "
                        "must delete the failed HostTask to retry")


def release(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Destroyed (or nothing to destroy): release the claim; the Instance may go."""
    return InstanceStep(act=Release(st.host), done=True, changed=True)


def settled(inst: Instance, st: InstanceStatus, seen: Seen) -> InstanceStep:
    """Active or Error: nothing to do."""
    return InstanceStep(done=True)


S, L = Stage, Look
TABLE: dict[tuple[Stage, Look], InstanceRule] = {
    (S.PLACING, L.FLAVOR_MISSING): flavor_missing,
    (S.PLACING, L.DOMAIN_OWNED): domain_owned,
    (S.PLACING, L.NO_VALID_HOST): no_valid_host,
    (S.PLACING, L.CHOSEN): chosen,
    (S.PLACING, L.HOST_RECORDED): claim,
    (S.PLACING, L.CLAIMED): claimed,
    (S.PLACING, L.CLAIM_REFUSED): claim_refused,
    (S.PLACING, L.QUOTA_REFUSED): quota_refused,
    (S.BUILDING, L.TASK_UNRECORDED): record_build_task,
    (S.BUILDING, L.TASK_MISSING): create_build_task,
    (S.BUILDING, L.TASK_WAITING): waiting,
    (S.BUILDING, L.TASK_FAILED): build_failed,
    (S.BUILDING, L.TASK_SUCCEEDED): built,
    (S.DELETING, L.LOCK_ORPHANED): lock_orphaned,
    (S.DELETING, L.HELD): held,
    (S.DELETING, L.TASK_UNRECORDED): record_destroy,
    (S.DELETING, L.TASK_MISSING): create_destroy,
    (S.DELETING, L.TASK_WAITING): waiting,
    (S.DELETING, L.TASK_FAILED): destroy_failed,
    (S.DELETING, L.TASK_SUCCEEDED): release,
    (S.DELETING, L.NOTHING_BUILT): release,
    (S.SETTLED, L.TICK): settled,
}
"""Every (stage, look) an Instance reacts to. Anything else changes nothing and waits."""


def step(inst: Instance, st: InstanceStatus, stage: Stage, seen: Seen) -> InstanceStep:
    """What the Instance does on ``seen`` in ``stage``."""
    return TABLE.get((stage, seen.look), waiting)(inst, st, seen)
