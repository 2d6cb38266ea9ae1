"""The drain planner (pure): from what a HostDrain sees, its next status and what to do.

One pass reads the drain, its Host, the Instances and the VMResizes labelled with the
drain's UID, and :func:`plan` returns the status to write and the acts that follow it
(disable the Host, create VMResizes, post Events). Nothing is remembered between passes:
each item's state comes again from its Instance and its VMResize, so a restarted operator
resumes where it was. Decide, record, then act: a move is recorded in the status
(``Moving`` with its VMResize's name) before the VMResize is created, and a recorded move
whose VMResize does not exist yet is created again on the next pass (the name is
deterministic, so a second create is harmless). ``maxParallel`` bounds the items in
``Moving``; since passes of one drain are serialized, it is never exceeded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from vmresize.api.drain import (
    TERMINAL_DRAIN_PHASES,
    DrainCounts,
    DrainItem,
    DrainPhase,
    DrainStatus,
    HostDrain,
    ItemState,
)
from vmresize.api.health import HealthCheck
from vmresize.api.host import Host
from vmresize.api.instance import Instance, InstancePhase
from vmresize.api.meta import Condition, set_condition
from vmresize.api.resize import ResizePhase, VMResize

#: An Instance may declare the health check that gates the auto-confirm of its moves: a
#: ``HealthCheck`` as JSON in this annotation (e.g. ``{"tcp": {"host": .., "port": 22}}``).
HEALTH_CHECK_ANNOTATION = "vmresize.io/health-check"

#: How a VMResize that ended without moving the VM reads in the drain.
_ENDED_UNMOVED = {
    ResizePhase.FAILED: "Failed",            # its own reason wins (NoValidHost, ...)
    ResizePhase.ROLLED_BACK: "RolledBack",
    ResizePhase.REVERTED: "Reverted",
    ResizePhase.ROLLBACK_FAILED: "RollbackFailed",
}
#: Instance phases that will not move without a person.
_UNMOVABLE = {InstancePhase.ERROR, InstancePhase.DELETING}
#: Instance phases that may become movable (being built).
_NOT_YET = {InstancePhase.PENDING, InstancePhase.BUILDING}


@dataclass(frozen=True)
class NewResize:
    """A VMResize the drain creates, after the status that records it is written."""

    namespace: str
    name: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """The outcome of one pass."""

    status: DrainStatus
    disable_host: str | None = None
    """Disable the Host with this reason (it is enabled, or its reason is another)."""
    creates: list[NewResize] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """``(type, reason, message)`` for the drain's Events."""

    @property
    def done(self) -> bool:
        """The drain reached a terminal phase."""
        return self.status.phase in TERMINAL_DRAIN_PHASES


def resize_name(drain_uid: str, instance: str) -> str:
    """The VMResize of one instance's move: ``drain-<uid8>-<instance>``, cut to 63
    characters with a hash of the whole when it is longer (a DNS label, like every name
    that ends up in a HostTask's name)."""
    name = f"drain-{drain_uid[:8]}-{instance}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def auto_confirm(inst: Instance, after_seconds: int) -> dict[str, Any] | str:
    """``spec.autoConfirm`` for a move of ``inst``: its declared health check (the move
    confirms once it passes, reverts otherwise) or the plain timer; a message when the
    declared check is not valid."""
    raw = (inst.metadata.get("annotations") or {}).get(HEALTH_CHECK_ANNOTATION)
    if not raw:
        return {"afterSeconds": after_seconds}
    try:
        check = HealthCheck.model_validate_json(raw)
    except ValidationError as e:
        return f"annotation {HEALTH_CHECK_ANNOTATION} is not a health check: " \
               f"{e.errors()[0]['msg']}"
    if sum(x is not None for x in (check.guest_agent, check.tcp, check.http)) != 1:
        return f"annotation {HEALTH_CHECK_ANNOTATION} must name exactly one probe"
    return {"check": check.wire()}


def _ended(item: DrainItem, state: ItemState, now: datetime, **update: Any) -> DrainItem:
    if item.state is state:
        return item.model_copy(update=update)
    return item.model_copy(update={"state": state, "finished_at": now, **update})


def _from_resize(item: DrainItem, r: VMResize, now: datetime) -> DrainItem:
    st = r.status
    phase = st.phase if st else ResizePhase.PENDING
    seen = {"resize_phase": phase.value, "dest_host": (st.dest_host if st else None)
            or item.dest_host}
    if phase is ResizePhase.CONFIRMED:
        return _ended(item, ItemState.MOVED, now, reason="", message="", **seen)
    if phase in _ENDED_UNMOVED:
        reason = (st.reason if st and phase is ResizePhase.FAILED and st.reason
                  else _ENDED_UNMOVED[phase])
        message = (st.rollback_message or st.message) if st else ""
        return _ended(item, ItemState.FAILED, now, reason=reason, message=message, **seen)
    return item.model_copy(update={"state": ItemState.MOVING, "reason": "",
                                   "message": st.message if st else "", **seen})


def _waiting(item: DrainItem, inst: Instance, host: str, now: datetime) -> DrainItem:
    """An item with no VMResize of the drain: moved off by someone else, unmovable, busy,
    or ready to move (``Waiting`` with no reason)."""
    st = inst.status
    if st is None or st.phase in _NOT_YET:
        return item.model_copy(update={"state": ItemState.WAITING, "reason": "Busy",
                                       "message": "being built"})
    if st.host != host:
        return _ended(item, ItemState.MOVED, now, dest_host=st.host, reason="",
                      message="left the host without the drain")
    if st.phase in _UNMOVABLE:
        return _ended(item, ItemState.FAILED, now, reason="Unmovable",
                      message=f"instance is {st.phase.value}: {st.message}".rstrip(": "))
    if st.active_resize_uid:
        return item.model_copy(update={"state": ItemState.WAITING, "reason": "Busy",
                                       "message": f"resize {st.active_resize} holds it"})
    return item.model_copy(update={"state": ItemState.WAITING, "reason": "", "message": ""})


def _counts(items: list[DrainItem]) -> DrainCounts:
    n = {s: sum(i.state is s for i in items) for s in ItemState}
    return DrainCounts(total=len(items), moved=n[ItemState.MOVED], moving=n[ItemState.MOVING],
                       waiting=n[ItemState.WAITING], failed=n[ItemState.FAILED])


def eta(items: list[DrainItem], parallel: int) -> datetime | None:
    """When the last move that ended, ended, plus their mean time times the rounds still
    to go (``ceil(left / maxParallel)``); None before a move ended, or with nothing left.
    From the moves' own times, not from now: a pass that sees nothing new writes nothing."""
    ended = [(i.started_at, i.finished_at) for i in items
             if i.state is ItemState.MOVED and i.started_at and i.finished_at]
    left = sum(i.state in (ItemState.WAITING, ItemState.MOVING) for i in items)
    if not ended or not left:
        return None
    mean = sum((end - start).total_seconds() for start, end in ended) / len(ended)
    return max(end for _, end in ended) + timedelta(seconds=mean * math.ceil(left / parallel))


def _conditions(old: list[Condition], phase: DrainPhase, message: str,
                generation: int | None, now: datetime,
                stall: tuple[str, str] | None = None) -> list[Condition]:
    """Ready, Reconciling and Stalled from the phase; ``stall`` (reason, message) marks a
    drain that is not terminal yet but cannot go on by itself (its host's agent is silent)."""
    out = old
    for kind, on in (("Ready", phase in (DrainPhase.DRAINED, DrainPhase.CANCELLED)),
                     ("Reconciling", phase not in TERMINAL_DRAIN_PHASES),
                     ("Stalled", phase in (DrainPhase.INCOMPLETE, DrainPhase.FAILED))):
        reason, text = phase.value, message if on else ""
        if kind == "Stalled" and not on and stall is not None:
            on, (reason, text) = True, stall
        out = set_condition(out, Condition(
            type=kind, status="True" if on else "False", reason=reason,
            message=text, observed_generation=generation), now)
    return out


def not_ready(host: Host) -> str | None:
    """Why no move may start from ``host`` now: its agent is silent (the heartbeat
    watchdog marked it not ready), so a move would stall in its disk copy and roll back
    onto the same silent agent. None when its agent is up, or no status is known yet."""
    st = host.status
    if st is None or st.ready:
        return None
    return (f"the agent of Host {host.name} is not ready (silent); no move starts until "
            "it is back")


def _phase(d: HostDrain, counts: DrainCounts, old: DrainPhase) -> tuple[DrainPhase, str]:
    if d.spec.cancel:
        if counts.moving:
            return DrainPhase.CANCELLING, f"cancelled; {counts.moving} move(s) finishing"
        return DrainPhase.CANCELLED, (f"cancelled with {counts.moved} of {counts.total} "
                                      "moved")
    if counts.moving or counts.waiting:
        return DrainPhase.DRAINING, (f"{counts.moved} of {counts.total} moved, "
                                     f"{counts.moving} moving, {counts.waiting} waiting, "
                                     f"{counts.failed} failed")
    if counts.failed:
        return DrainPhase.INCOMPLETE, (f"{counts.failed} of {counts.total} instance(s) could "
                                       "not move; they still run on the host")
    return DrainPhase.DRAINED, f"all {counts.total} instance(s) moved; the host is empty"


def disabled_reason(d: HostDrain) -> str:
    """The Host's ``disabledReason`` while the drain holds it."""
    return f"drained by HostDrain {d.name}" + (f": {d.spec.reason}" if d.spec.reason else "")


def plan(d: HostDrain, host: Host | None, instances: list[Instance],
         resizes: list[VMResize], now: datetime) -> Plan:
    """One pass of the drain ``d``: ``instances`` are every Instance the cluster holds (or
    at least those on the Host and those the status names), ``resizes`` the VMResizes
    labelled with the drain's UID."""
    old = d.status or DrainStatus()
    gen = d.metadata.get("generation")
    if old.phase in TERMINAL_DRAIN_PHASES:
        return Plan(status=old)
    if host is None:
        msg = f"Host {d.spec.host} does not exist"
        return Plan(status=old.model_copy(update={
            "phase": DrainPhase.FAILED, "reason": "HostNotFound", "message": msg,
            "finished_at": now, "observed_generation": gen,
            "conditions": _conditions(old.conditions, DrainPhase.FAILED, msg, gen, now)}),
            events=[("Warning", "HostNotFound", msg)])
    events: list[tuple[str, str, str]] = []
    by_key = {(i.namespace, i.name): i for i in instances}
    by_instance = {(r.namespace, r.spec.instance_name): r for r in resizes}
    items: list[DrainItem] = []
    known = {(i.namespace, i.name) for i in old.instances}
    # New instances on the host join at the end (not after a cancel), in a stable order.
    arrivals = sorted(k for k, i in by_key.items()
                      if k not in known and i.status and i.status.host == host.name)
    listed = list(old.instances) if d.spec.cancel else [
        *old.instances, *(DrainItem(namespace=ns, name=n, uid=by_key[(ns, n)].uid)
                          for ns, n in arrivals)]
    for item in listed:
        key = (item.namespace, item.name)
        inst, r = by_key.get(key), by_instance.get(key)
        if r is not None:
            new = _from_resize(item, r, now)
        elif item.state is ItemState.MOVING or item.state in (ItemState.MOVED,
                                                               ItemState.FAILED):
            new = item    # recorded move not created yet (created below), or ended
        elif inst is None or (item.uid and inst.uid != item.uid):
            events.append(("Normal", "InstanceGone", f"{item.namespace}/{item.name} was "
                           "deleted; it leaves the drain"))
            continue
        else:
            new = _waiting(item, inst, host.name, now)
        if new.state is not item.state and new.state in (ItemState.MOVED, ItemState.FAILED):
            kind = "Normal" if new.state is ItemState.MOVED else "Warning"
            where = f" to {new.dest_host}" if new.state is ItemState.MOVED and new.dest_host \
                else f": {new.reason} {new.message}".rstrip()
            events.append((kind, f"Instance{new.state.value}",
                           f"{item.namespace}/{item.name} {new.state.value.lower()}{where}"))
        items.append(new)
    # A silent agent on the drained host: what waits says why, and nothing new starts.
    down = None if d.spec.cancel else not_ready(host)
    if down is not None:
        items = [i.model_copy(update={"reason": "HostNotReady", "message": down})
                 if i.state is ItemState.WAITING and not i.reason else i for i in items]
    creates: list[NewResize] = []
    disable = None
    if not d.spec.cancel:
        if host.spec.enabled or host.spec.disabled_reason != disabled_reason(d):
            disable = disabled_reason(d)
        # A move starts only once the Host is out of scheduling (disabled on a pass before).
        slots = d.spec.max_parallel - sum(i.state is ItemState.MOVING for i in items)
        for n, item in enumerate(items):
            if slots <= 0 or host.spec.enabled:
                break
            if item.state is not ItemState.WAITING or item.reason:
                continue
            ac = auto_confirm(by_key[(item.namespace, item.name)],
                              d.spec.auto_confirm_after_seconds)
            if isinstance(ac, str):
                items[n] = _ended(item, ItemState.FAILED, now, reason="Unmovable", message=ac)
                events.append(("Warning", "InstanceFailed",
                               f"{item.namespace}/{item.name} failed: Unmovable {ac}"))
                continue
            name = resize_name(d.uid, item.name)
            items[n] = item.model_copy(update={"state": ItemState.MOVING, "resize": name,
                                               "started_at": now, "resize_phase": None})
            events.append(("Normal", "MoveStarted",
                           f"{item.namespace}/{item.name}: VMResize {name}"))
            slots -= 1
    for item in items:
        if item.state is ItemState.MOVING and item.resize and \
                (item.namespace, item.name) not in by_instance:
            ac = auto_confirm(by_key[(item.namespace, item.name)],
                              d.spec.auto_confirm_after_seconds) \
                if (item.namespace, item.name) in by_key else {}
            spec: dict[str, Any] = {"instanceName": item.name}
            if isinstance(ac, dict) and ac:
                spec["autoConfirm"] = ac
            creates.append(NewResize(item.namespace, item.resize, spec))
    counts = _counts(items)
    phase, message = _phase(d, counts, old.phase)
    if phase is DrainPhase.DRAINING and host.spec.enabled and not counts.moving:
        phase, message = DrainPhase.PENDING, f"disabling Host {host.name}"
    if phase is not old.phase:
        kind = "Warning" if phase in (DrainPhase.INCOMPLETE, DrainPhase.FAILED) else "Normal"
        events.append((kind, phase.value, message))
    stall = ("HostNotReady", down) if down is not None and phase not in \
        TERMINAL_DRAIN_PHASES else None
    was = next((c for c in old.conditions if c.type == "Stalled"), None)
    if stall is not None and (was is None or was.reason != stall[0]):
        events.append(("Warning", *stall))
    done = counts.moved + counts.failed
    status = DrainStatus(
        phase=phase, reason=phase.value, message=message, counts=counts,
        progress=f"{done}/{counts.total}",
        percent=100 if not counts.total else done * 100 // counts.total,
        eta=eta(items, d.spec.max_parallel),
        started_at=old.started_at or (now if counts.moving else None),
        finished_at=now if phase in TERMINAL_DRAIN_PHASES else None,
        instances=items, observed_generation=gen,
        conditions=_conditions(old.conditions, phase, message, gen, now, stall))
    return Plan(status=status, disable_host=disable, creates=creates, events=events)
