"""kopf timer that releases an Instance lock whose holder is gone (or sets Error when the
holder's steps leave the VM's whereabouts unknown)
(:mod:`vmresize.operator.reconcile.sweep`).

Orphaned Host claims are swept by the one loop in :mod:`.host_health`, not by a timer per
Host: a kopf timer keeps its state (and a finalizer) on the object, and the operator may not
write Host metadata (admins own Hosts).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.operator.handlers.memo import shared
from vmresize.operator.reconcile import driver, engine, sweep

log = logging.getLogger(__name__)
#: Seconds between sweeps of one object: leaks are rare and cost only capacity meanwhile.
INTERVAL = 30.0


def _locked(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("activeResizeUid"))


@kopf.timer(GROUP, VERSION, "instances", id="sweep-lock", interval=INTERVAL,
            initial_delay=INTERVAL, when=_locked)
async def sweep_lock(body: kopf.Body, uid: str, name: str, namespace: str | None,
                     status: kopf.Status, memo: kopf.Memo, **kwargs: Any) -> None:
    """Settle this Instance if its VMResize no longer exists: release the lock, or set Error
    when that resize's steps leave its whereabouts unknown (serialized with the instance's
    own steps)."""
    resize_uids: kopf.Index[str, bool] = kwargs["resize_uids"]   # .resize's index
    if status.get("activeResizeUid") in resize_uids:
        # The watch sees the holder: no request (a thousand locked instances cost none).
        # Only a holder the watch does not see is looked up, and only the API's answer
        # releases the lock.
        return
    op = shared(memo)

    def release(_now: Any) -> engine.Outcome:
        event = sweep.sweep_instance_lock(op.storage, namespace or "", name,
                                          op.settings.namespace)
        return engine.Outcome(changed=event is not None, events=[event] if event else [])

    out = await driver.step(op.locks, uid, release)
    driver.post(body, out.events)
