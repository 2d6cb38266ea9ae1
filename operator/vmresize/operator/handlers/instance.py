"""kopf handlers for Instance: a daemon places and builds it; deletion destroys it."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import kopf

from vmresize.api.instance import InstancePhase
from vmresize.api.meta import GROUP, VERSION
from vmresize.operator.reconcile import driver, instances

_BUILDING = {InstancePhase.PENDING.value, InstancePhase.BUILDING.value}


def _unbuilt(status: Any, **_: Any) -> bool:
    return (status or {}).get("phase", InstancePhase.PENDING.value) in _BUILDING


@kopf.daemon(GROUP, VERSION, "instances", id="build", when=_unbuilt, cancellation_timeout=10)
async def build(body: Any, uid: str, name: str, namespace: str | None, stopped: Any,
                memo: Any, **_: Any) -> None:
    """Daemon for an unbuilt Instance: runs the Instance reconcile until it is Active or Error."""
    step = partial(instances.reconcile, memo.storage, memo.settings, namespace or "", name)
    await driver.run(body, uid, step, memo.wakeups, stopped, memo.settings.poll_seconds,
                     memo.locks)


@kopf.on.delete(GROUP, VERSION, "instances", id="destroy")
async def delete(body: Any, uid: str, name: str, namespace: str | None, memo: Any,
                 **_: Any) -> None:
    """Before the finalizer goes: destroy the domain and disk and release the claim (kopf retries
    until that is done), then delete the Instance's HostTasks."""
    step = partial(instances.reconcile, memo.storage, memo.settings, namespace or "", name)
    out = await driver.step(memo.locks, uid, step)
    driver.post(body, out.events)
    if not out.done:
        raise kopf.TemporaryError("waiting for Destroy", delay=1)
    await asyncio.to_thread(memo.storage.delete_tasks, memo.settings.namespace, uid)
    memo.locks.forget(uid)
