"""kopf handlers for Instance: a daemon places and builds it; deletion destroys it; a change
wakes the resizes that wait for it in Pending."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import kopf

from vmresize.api.instance import InstancePhase
from vmresize.api.meta import GROUP, VERSION
from vmresize.operator.handlers.memo import shared, shared_or_none
from vmresize.operator.reconcile import driver, instances

_BUILDING = {InstancePhase.PENDING.value, InstancePhase.BUILDING.value}


def _unbuilt(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase", InstancePhase.PENDING.value) in _BUILDING


@kopf.daemon(GROUP, VERSION, "instances", id="build", when=_unbuilt, cancellation_timeout=10)
async def build(body: kopf.Body, uid: str, name: str, namespace: str | None,
                stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Daemon for an unbuilt Instance: runs the Instance reconcile until it is Active or Error."""
    op = shared(memo)
    step = partial(instances.reconcile, op.storage, op.settings, namespace or "", name)
    await driver.run(body, uid, step, op.wakeups, stopped, op.settings.poll_seconds, op.locks)


@kopf.on.event(GROUP, VERSION, "instances")
async def wake_pending_resizes(name: str, namespace: str | None, memo: kopf.Memo,
                               **kwargs: Any) -> None:
    """The Instance changed: wake the resizes that wait in Pending for it (to be built, or
    gone: they fail then). The others do not read the Instance while they wait."""
    op = shared_or_none(memo)
    if op is None:
        return
    pending: kopf.Index[tuple[str, str], str] = kwargs["pending_resizes"]  # .resize's index
    for uid in pending.get((namespace or "", name), ()):
        op.wakeups.wake(uid)


@kopf.on.delete(GROUP, VERSION, "instances", id="destroy")
async def delete(body: kopf.Body, uid: str, name: str, namespace: str | None,
                 memo: kopf.Memo, **_: Any) -> None:
    """Before the finalizer goes: destroy the domain and disk and release the claim (kopf retries
    until that is done), then delete the Instance's HostTasks."""
    op = shared(memo)
    step = partial(instances.reconcile, op.storage, op.settings, namespace or "", name)
    out = await driver.step(op.locks, uid, step)
    driver.post(body, out.events)
    if not out.done:
        raise kopf.TemporaryError("waiting for Destroy", delay=1)
    await asyncio.to_thread(op.storage.delete_tasks, op.settings.namespace, uid)
    op.locks.forget(uid)
