"""kopf handlers for VMResize: load, call :mod:`engine`, persist (the engine persists).

A daemon drives each unfinished resize; a delete handler (behind the finalizer) rolls a
resize back before letting it go, so deleting it never leaves the instance half-moved.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.api.resize import TERMINAL_PHASES
from vmresize.operator.reconcile import driver, engine

_DONE = {p.value for p in TERMINAL_PHASES}


def _active(status: Any, **_: Any) -> bool:
    # A finished resize whose last effects (claims, the instance) may not be done yet
    # (a crash right after the final write) still needs its daemon to carry them out.
    st = status or {}
    return st.get("phase") not in _DONE or bool(st.get("pending"))


@kopf.daemon(GROUP, VERSION, "vmresizes", id="drive", when=_active, cancellation_timeout=10)
async def drive(body: Any, uid: str, name: str, namespace: str | None, stopped: Any,
                memo: Any, **_: Any) -> None:
    """Daemon for an unfinished VMResize: runs the engine until the resize reaches a terminal
    phase."""
    step = partial(engine.reconcile, memo.storage, memo.settings, namespace or "", name)
    await driver.run(body, uid, step, memo.wakeups, stopped, memo.settings.poll_seconds,
                     memo.locks)


@kopf.on.event(GROUP, VERSION, "vmresizes")
def user_acted(spec: Any, uid: str, memo: Any, **_: Any) -> None:
    """confirm/revert set: wake the daemon now instead of at its next poll."""
    if spec.get("confirm") or spec.get("revert"):
        memo.wakeups.wake(uid)


@kopf.on.delete(GROUP, VERSION, "vmresizes", id="rollback-before-delete")
async def delete(body: Any, uid: str, name: str, namespace: str | None, memo: Any,
                 **_: Any) -> None:
    """Before the finalizer goes: an unfinished resize is reverted or rolled back to its source
    (kopf retries until it is finished), then its HostTasks are deleted."""
    # The same step as the daemon's, serialized with it; the step itself reads that the
    # resize is being deleted (metadata.deletionTimestamp).
    step = partial(engine.reconcile, memo.storage, memo.settings, namespace or "", name)
    out = await driver.step(memo.locks, uid, step)
    driver.post(body, out.events)
    if not out.done:
        raise kopf.TemporaryError(f"rolling back before deletion ({out.phase})", delay=1)
    await asyncio.to_thread(memo.storage.delete_tasks, memo.settings.namespace, uid)
    memo.locks.forget(uid)
