"""kopf handlers for VMResize: load, call :mod:`engine`, persist (the engine persists).

A daemon drives each unfinished resize; a delete handler (behind the finalizer) rolls a
resize back before letting it go, so deleting it never leaves the instance half-moved. A
spec change wakes the daemon; an index of all resizes lets the Instance handlers find the
resizes of an instance (:mod:`.instance`, :mod:`.sweep`).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.api.resize import TERMINAL_PHASES, ResizePhase
from vmresize.operator.handlers.memo import shared
from vmresize.operator.handlers.startup import FINALIZER, PREFIX
from vmresize.operator.reconcile import driver, engine

_DONE = {p.value for p in TERMINAL_PHASES}
#: kopf's record of the last handled spec, which it writes on a new object after its finalizer.
_HANDLED = f"{PREFIX}/last-handled-configuration"


async def _kopf_written(body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
    """Right after a resize is created kopf writes it twice (its finalizer, then its record
    of the handled spec); a first step that writes the status in between meets a 409 and is
    done again from the start (most new resizes did: five requests more each). A new resize
    (no status yet) therefore waits until kopf's live body shows both, for a second at most."""
    if body.get("status"):
        return
    for _ in range(200):
        meta = body.get("metadata") or {}
        if stopped or (FINALIZER in (meta.get("finalizers") or [])
                       and _HANDLED in (meta.get("annotations") or {})):
            return
        await asyncio.sleep(0.005)


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
    await _kopf_written(body, stopped)
    step = partial(engine.reconcile, op.storage, op.settings, namespace or "", name)
    await driver.run(body, uid, step, op.wakeups, stopped, op.settings.poll_seconds, op.locks)


@kopf.on.event(GROUP, VERSION, "vmresizes")
async def user_acted(type: str, uid: str, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """The spec changed (confirm or revert set, ...): wake the daemon now. Its own status
    writes change no generation and wake nothing (the daemon steps again after a write)."""
    op = shared(memo)
    if type == "DELETED":
        op.seen_specs.forget(uid)
    elif op.seen_specs.changed(uid, str(meta.get("generation", ""))):
        op.wakeups.wake(uid)


@kopf.index(GROUP, VERSION, "vmresizes", id="resize_uids")
async def resize_uids(uid: str, **_: Any) -> dict[str, bool]:
    """Every VMResize's UID: :mod:`.sweep` sees without a request that a lock's holder is
    there."""
    return {uid: True}


@kopf.index(GROUP, VERSION, "vmresizes", id="pending_resizes")
async def pending_resizes(uid: str, namespace: str | None, spec: kopf.Spec,
                          status: kopf.Status, **_: Any) -> dict[tuple[str, str], str] | None:
    """The UIDs of Pending resizes by ``(namespace, instanceName)``: a resize applied with its
    Instance waits in Pending until the instance is built, and :mod:`.instance` wakes it."""
    if status.get("phase", ResizePhase.PENDING.value) != ResizePhase.PENDING.value:
        return None
    return {(namespace or "", str(spec.get("instanceName", ""))): uid}


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
