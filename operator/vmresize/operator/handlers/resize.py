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
from vmresize.operator.handlers.memo import shared
from vmresize.operator.reconcile import driver, engine

_DONE = {p.value for p in TERMINAL_PHASES}


def _active(status: kopf.Status, **_: Any) -> bool:
    # A finished resize whose last effects (claims, the instance) may not be done yet
    # (a crash right after the final write) still needs its daemon to carry them out.
    return status.get("phase") not in _DONE or bool(status.get("pending"))


@kopf.daemon(GROUP, VERSION, "vmresizes", id="drive", when=_active, cancellation_timeout=10)
async def drive(body: kopf.Body, uid: str, name: str, namespace: str | None,
                stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Daemon for an unfinished VMResize: runs the engine until the resize reaches a terminal
    phase."""
    op = shared(memo)
    step = partial(engine.reconcile, op.storage, op.settings, namespace or "", name)
    await driver.run(body, uid, step, op.wakeups, stopped, op.settings.poll_seconds, op.locks)


@kopf.on.event(GROUP, VERSION, "vmresizes")
def user_acted(spec: kopf.Spec, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """confirm/revert set: wake the daemon now instead of at its next poll."""
    if spec.get("confirm") or spec.get("revert"):
        shared(memo).wakeups.wake(uid)


@kopf.on.delete(GROUP, VERSION, "vmresizes", id="rollback-before-delete")
async def delete(body: kopf.Body, uid: str, name: str, namespace: str | None,
                 memo: kopf.Memo, **_: Any) -> None:
    """Before the finalizer goes: an unfinished resize is reverted or rolled back to its source
    (kopf retries until it is finished), then its HostTasks are deleted."""
    # The same step as the daemon's, serialized with it; the step itself reads that the
    # resize is being deleted (metadata.deletionTimestamp).
    op = shared(memo)
    step = partial(engine.reconcile, op.storage, op.settings, namespace or "", name)
    out = await driver.step(op.locks, uid, step)
    driver.post(body, out.events)
    if not out.done:
        raise kopf.TemporaryError(f"rolling back before deletion ({out.phase})", delay=1)
    await asyncio.to_thread(op.storage.delete_tasks, op.settings.namespace, uid)
    op.locks.forget(uid)
