"""Quotas (pure): usage from charges, whether a new charge fits, the headroom, and the
lifecycle's rule for a resize the quota refuses.

A namespace's VMQuota charges (:mod:`vmresize.api.quota`) mirror its Host claims; these
functions decide on plain values, and :mod:`vmresize.operator.persistence.quota` writes
what they decide, guarded by the quota's resourceVersion. A resize is checked in Pending
(read only: refused there, nothing was touched) and charged with its destination claim
(``ClaimDest``); a charge refused there (another request took the room meanwhile) ends it
in Scheduling, the instance unlocked and untouched (:func:`scheduling_refused`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from vmresize.api.instance import InstancePhase
from vmresize.api.quota import QuotaCharge, QuotaLimits, QuotaUsage
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.vocabulary import (
    Observation,
    ReleaseDestClaim,
    State,
    Step,
    UpdateInstance,
)

QUOTA_EXCEEDED = "QuotaExceeded"
"""The reason of every refusal for quota (Instance, VMResize and the VMQuota itself)."""

#: (field, what people call it, unit) in the order a message names them.
_FIELDS = (("instances", "instances", ""), ("vcpus", "vCPUs", ""),
           ("memory_mib", "memory", " MiB"), ("disk_gib", "disk", " GiB"))


def usage(charges: Iterable[QuotaCharge]) -> QuotaUsage:
    """The sum of ``charges``."""
    u = QuotaUsage()
    for c in charges:
        u = QuotaUsage(instances=u.instances + c.instances, vcpus=u.vcpus + c.resources.vcpus,
                       memory_mib=u.memory_mib + c.resources.memory_mib,
                       disk_gib=u.disk_gib + c.resources.disk_gib)
    return u


def exceeded(quota: str, hard: QuotaLimits, charges: Mapping[str, QuotaCharge], key: str,
             charge: QuotaCharge) -> str | None:
    """Why ``charge`` (for holder ``key``) does not fit under ``hard``, naming each limit it
    would pass with the numbers; None when it fits. A holder already charged is charged
    again at its new size, not twice."""
    used = usage(c for k, c in charges.items() if k != key)
    after = usage([*(c for k, c in charges.items() if k != key), charge])
    over = []
    for field, label, unit in _FIELDS:
        limit = getattr(hard, field)
        if limit is not None and getattr(after, field) > limit:
            want = getattr(after, field) - getattr(used, field)
            over.append(f"{label}: {getattr(used, field)}{unit} used + {want}{unit} asked "
                        f"> {limit}{unit} allowed")
    if not over:
        return None
    return f"VMQuota {quota} would be exceeded ({'; '.join(over)})"


def headroom(hard: QuotaLimits, used: QuotaUsage) -> dict[str, int | None]:
    """What is left under each limit (None: no limit), for ``kubectl vmresize plan``."""
    return {field: None if getattr(hard, field) is None
            else max(0, getattr(hard, field) - getattr(used, field))
            for field, _, _ in _FIELDS}


def exhausted(hard: QuotaLimits, used: QuotaUsage) -> list[str]:
    """The limits that are reached (a request for more of them is refused)."""
    return [label for field, label, _ in _FIELDS
            if getattr(hard, field) is not None and getattr(used, field) >= getattr(hard, field)]


def scheduling_refused(s: State, o: Observation, now: datetime) -> Step:
    """Scheduling: the quota refused the destination's charge; release whatever was claimed,
    unlock the instance (its power state as it is: nothing was done to it), Failed."""
    return Step(ResizePhase.FAILED, (ReleaseDestClaim(), UpdateInstance(
        "source", InstancePhase.ACTIVE, None, unlock=True)), reason=QUOTA_EXCEEDED,
        message=f"{o.message}; nothing was changed")


def resync(charges: Mapping[str, QuotaCharge], held: Mapping[str, QuotaCharge],
           alive: frozenset[str]) -> dict[str, QuotaCharge]:
    """The charges as they should be, from the Host claims the namespace ``held`` (keyed
    alike) and the holders still ``alive`` (keys of existing Instances and unfinished
    resizes): a claim on a host is always charged (it is held, whatever the limit: a quota
    made after its instances counts them), and a charge is dropped only once its holder is
    gone and no host holds its claim. A charge taken just before its claim stays."""
    out = {k: c for k, c in charges.items() if k in held or k in alive}
    for k, c in held.items():
        out.setdefault(k, c)
    return out
