"""kopf timers that release claims and Instance locks whose holder is gone
(:mod:`vmresize.operator.reconcile.sweep`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.operator.handlers.memo import shared
from vmresize.operator.reconcile import driver, engine, sweep

log = logging.getLogger(__name__)
#: Seconds between sweeps of one object: leaks are rare and cost only capacity meanwhile.
INTERVAL = 30.0


def _has_allocations(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("allocations"))


def _locked(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("activeResizeUid"))


@kopf.timer(GROUP, VERSION, "hosts", id="sweep-claims", interval=INTERVAL,
            initial_delay=INTERVAL, when=_has_allocations)
async def sweep_claims(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Release the claims on this Host whose holder is gone (or holds nothing now)."""
    gone = await asyncio.to_thread(sweep.sweep_host, shared(memo).storage, name)
    if gone:
        log.warning("host %s: released claims of gone holders: %s", name, ", ".join(gone))


@kopf.timer(GROUP, VERSION, "instances", id="sweep-lock", interval=INTERVAL,
            initial_delay=INTERVAL, when=_locked)
async def sweep_lock(body: kopf.Body, uid: str, name: str, namespace: str | None,
                     memo: kopf.Memo, **_: Any) -> None:
    """Release this Instance's lock if its VMResize no longer exists (serialized with
    the instance's own steps)."""
    op = shared(memo)

    def release(_now: Any) -> engine.Outcome:
        done = sweep.sweep_instance_lock(op.storage, namespace or "", name)
        return engine.Outcome(changed=done)

    out = await driver.step(op.locks, uid, release)
    if out.changed:
        driver.post(body, [("Normal", "LockReleased",
                            "Released the lock of a VMResize that no longer exists")])
