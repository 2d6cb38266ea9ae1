"""Charges on a namespace's VMQuotas, with optimistic concurrency (as Host claims).

A charge is an entry in ``VMQuota.status.charges`` keyed as the holder's Host claim
(``<Kind>/<uid>``). Every change reads the quota, decides (:mod:`..decisions.quota`) and
replaces its status guarded by the resourceVersion it read; a 409 means another request
wrote in between, so it reads and decides again. So concurrent creates and resizes in one
namespace can never both take the last of a limit. A charge is taken before the host claim
and dropped after it: the quota never holds less than the hosts do.

A namespace may have several VMQuotas: a charge must fit under each (taken in name order,
those already taken given back on a refusal). No VMQuota: nothing is limited.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from vmresize.api.meta import Condition, set_condition
from vmresize.api.quota import QuotaCharge, VMQuota, VMQuotaStatus
from vmresize.api.resize import TERMINAL_PHASES
from vmresize.operator.decisions import quota as rules
from vmresize.operator.errors import ApiConflictError
from vmresize.operator.persistence import claims
from vmresize.operator.persistence.storage import Storage

#: Re-reads after a 409, as for Host claims (:data:`..claims.MAX_CONFLICT_RETRIES`).
MAX_CONFLICT_RETRIES = 50

Change = Callable[[VMQuota, VMQuotaStatus], bool | None]
"""Mutates the status; True: write it, None: nothing to do, False: refused (the status may
carry the refusal, written on a best-effort basis)."""


def settle(q: VMQuota, st: VMQuotaStatus) -> VMQuotaStatus:
    """``st`` with its usage summed from its charges and the Exhausted condition set."""
    st.used = rules.usage(st.charges.values())
    full = rules.exhausted(q.spec.hard, st.used)
    st.conditions = set_condition(st.conditions, Condition(
        type="Exhausted", status="True" if full else "False",
        reason=rules.QUOTA_EXCEEDED if full else "Room",
        message=f"limits reached: {', '.join(full)}" if full else ""), datetime.now(UTC))
    return st


def _update(storage: Storage, namespace: str, name: str, change: Change) -> bool:
    for _ in range(MAX_CONFLICT_RETRIES):
        q = storage.quota(namespace, name)
        if q is None:
            return True   # gone: it limits nothing any more
        st = (q.status or VMQuotaStatus()).model_copy(deep=True)
        decision = change(q, st)
        if decision is None:
            return True
        q.status = settle(q, st)
        try:
            storage.replace_status(q)
        except ApiConflictError:
            continue
        return decision
    raise ApiConflictError(f"vmquota {namespace}/{name}: too many concurrent writers")


def _charge_one(storage: Storage, namespace: str, name: str, key: str,
                c: QuotaCharge) -> str | None:
    refusal: list[str] = []

    def change(quota: VMQuota, st: VMQuotaStatus) -> bool | None:
        refusal.clear()
        if st.charges.get(key) == c:
            return None
        why = rules.exceeded(quota.name, quota.spec.hard, st.charges, key, c)
        if why is None:
            st.charges[key] = c
            return True
        refusal.append(f"{why}; refused {c.kind} {c.consumer}")
        if (st.reason, st.message) == (rules.QUOTA_EXCEEDED, refusal[0]):
            return None   # said already
        st.reason, st.message = rules.QUOTA_EXCEEDED, refusal[0]
        return False

    _update(storage, namespace, name, change)
    return refusal[0] if refusal else None


def charge(storage: Storage, namespace: str, key: str, c: QuotaCharge) -> str | None:
    """Charge ``c`` for the holder ``key`` on every VMQuota of ``namespace``; None when it
    fits under all (or there is none), else the refusal naming the limit and the numbers
    (nothing is charged then, and the refusing quota's status says it)."""
    taken: list[str] = []
    for q in sorted(storage.quotas(namespace), key=lambda q: q.name):
        refusal = _charge_one(storage, namespace, q.name, key, c)
        if refusal is not None:
            for name in taken:
                _release_one(storage, namespace, name, key)
            return refusal
        taken.append(q.name)
    return None


def would_exceed(storage: Storage, namespace: str, key: str, c: QuotaCharge) -> str | None:
    """Read-only: the refusal ``charge`` would give now (None: it fits). For a check that
    must write nothing (a resize in Pending); the charge itself decides later."""
    for q in sorted(storage.quotas(namespace), key=lambda q: q.name):
        st = q.status or VMQuotaStatus()
        why = rules.exceeded(q.name, q.spec.hard, st.charges, key, c)
        if why is not None:
            return f"{why}; refused {c.kind} {c.consumer}"
    return None


def charged(storage: Storage, namespace: str, key: str) -> bool:
    """Whether every VMQuota of ``namespace`` holds a charge for ``key`` (True: none)."""
    return all(key in (q.status or VMQuotaStatus()).charges for q in storage.quotas(namespace))


def _release_one(storage: Storage, namespace: str, name: str, key: str) -> None:
    def change(_q: VMQuota, st: VMQuotaStatus) -> bool | None:
        return True if st.charges.pop(key, None) is not None else None

    _update(storage, namespace, name, change)


def release(storage: Storage, namespace: str, key: str) -> None:
    """Drop the charge of ``key`` from every VMQuota of ``namespace`` (a missing one: no-op)."""
    for q in storage.quotas(namespace):
        if key in (q.status or VMQuotaStatus()).charges:
            _release_one(storage, namespace, q.name, key)


def _transfer_one(storage: Storage, namespace: str, name: str, from_key: str,
                  to_key: str, consumer: str) -> None:
    def change(_q: VMQuota, st: VMQuotaStatus) -> bool | None:
        moving = st.charges.pop(from_key, None)
        if moving is None:
            return None
        st.charges[to_key] = QuotaCharge(consumer=consumer, kind="Instance", instances=1,
                                         resources=moving.resources)
        return True

    _update(storage, namespace, name, change)


def transfer(storage: Storage, namespace: str, from_key: str, to_key: str,
             consumer: str) -> None:
    """Confirm: the resize's charge (the new size) becomes the instance's, in one write per
    quota; the instance's old charge goes. Never more than before, so never refused."""
    for q in storage.quotas(namespace):
        if from_key in (q.status or VMQuotaStatus()).charges:
            _transfer_one(storage, namespace, q.name, from_key, to_key, consumer)


def resync(storage: Storage, namespace: str, name: str) -> None:
    """Bring the charges of VMQuota ``namespace/name`` in line with the Host claims of the
    namespace and its living holders (:func:`..decisions.quota.resync`), and its usage
    and conditions with them."""
    held: dict[str, QuotaCharge] = {}
    for h in storage.hosts():
        for k, a in (h.status.allocations if h.status else {}).items():
            if a.consumer.startswith(f"{namespace}/"):
                held[k] = QuotaCharge(consumer=a.consumer, kind=a.kind,
                                      instances=1 if a.kind == "Instance" else 0,
                                      resources=a.resources)
    alive = frozenset(
        [claims.key("Instance", i.uid) for i in storage.instances() if i.namespace == namespace]
        + [claims.key("VMResize", r.uid) for r in storage.resizes()
           if r.namespace == namespace and (r.status is None
                                            or r.status.phase not in TERMINAL_PHASES)])

    def change(q: VMQuota, st: VMQuotaStatus) -> bool | None:
        stored = (dict(st.charges), st.used, [(c.type, c.status) for c in st.conditions])
        st.charges = rules.resync(st.charges, held, alive)
        settled = settle(q, st.model_copy(deep=True))
        now = (st.charges, settled.used, [(c.type, c.status) for c in settled.conditions])
        return None if now == stored else True

    _update(storage, namespace, name, change)
