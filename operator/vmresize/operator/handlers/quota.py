"""kopf handler for VMQuota: a new or changed quota is resynced at once.

Charges are taken and dropped by the steps that claim and release on hosts
(:mod:`vmresize.operator.persistence.quota`); a resync only catches up: a quota created
after its instances counts them, and the usage and the ``Exhausted`` condition follow a
change of the limits. Leaks (a charge whose holder went away during a crash) are caught
by the claim sweep (:mod:`.host_health`), which resyncs every quota. An event handler,
not a timer: a kopf timer would put a finalizer on every VMQuota, which admins delete.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.operator.handlers.memo import shared_or_none
from vmresize.operator.persistence import quota


@kopf.on.event(GROUP, VERSION, "vmquotas")
async def resync(name: str, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """Resync this VMQuota's charges with the Host claims of its namespace (its own write
    comes back as an event and then finds nothing to change)."""
    op = shared_or_none(memo)
    if op is None or kwargs.get("type") == "DELETED":
        return
    await asyncio.to_thread(quota.resync, op.storage, namespace or "", name)
