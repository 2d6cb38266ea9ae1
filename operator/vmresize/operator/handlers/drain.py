"""kopf handlers for HostDrain: a daemon per unfinished drain runs its passes.

The pass itself is :mod:`vmresize.operator.reconcile.drain`; the daemon only loops it
(:func:`vmresize.operator.reconcile.driver.run`, serialized per drain by the shared locks).
kopf starts the daemon again for every unfinished drain after an operator restart, and
the first pass rebuilds everything from the API. A move that ends wakes its drain at once
(the VMResize's label names the drain's UID), so the next move starts without waiting
for the drain's next look; so does a change of the drain's spec (cancel, maxParallel).
Deleting a drain stops its daemon: no new moves start, and the VMResizes it made
(labelled, not owned) run to their end.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import kopf

from vmresize.api.drain import DRAIN_UID_LABEL, TERMINAL_DRAIN_PHASES
from vmresize.api.meta import GROUP, VERSION
from vmresize.api.resize import TERMINAL_PHASES
from vmresize.operator.handlers.memo import shared
from vmresize.operator.persistence.drains import DrainStore
from vmresize.operator.reconcile import drain as passes
from vmresize.operator.reconcile import driver

_DONE = {p.value for p in TERMINAL_DRAIN_PHASES}
_MOVE_ENDED = {p.value for p in TERMINAL_PHASES}


def _active(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in _DONE


@kopf.daemon(GROUP, VERSION, "hostdrains", id="drain", when=_active, cancellation_timeout=10)
async def drain(body: kopf.Body, uid: str, name: str, stopped: kopf.DaemonStopped,
                memo: kopf.Memo, **_: Any) -> None:
    """Daemon for an unfinished HostDrain: passes until it reaches a terminal phase."""
    op = shared(memo)
    store = DrainStore(op.storage)
    step = partial(passes.reconcile, store, name, op.settings.poll_seconds)
    await driver.run(body, uid, step, op.wakeups, stopped, op.settings.poll_seconds, op.locks)


@kopf.on.event(GROUP, VERSION, "vmresizes", labels={DRAIN_UID_LABEL: kopf.PRESENT})
async def move_ended(labels: kopf.Labels, status: kopf.Status, memo: kopf.Memo,
                     **_: Any) -> None:
    """A drain's VMResize ended: wake its drain now (a slot is free), rather than at its
    next look."""
    if status.get("phase") in _MOVE_ENDED:
        shared(memo).wakeups.wake(str(labels[DRAIN_UID_LABEL]))


@kopf.on.event(GROUP, VERSION, "hostdrains")
async def admin_acted(type: str, uid: str, meta: kopf.Meta, memo: kopf.Memo,
                      **_: Any) -> None:
    """The spec changed (cancel, maxParallel): wake the drain now. Its own status writes
    change no generation and wake nothing."""
    op = shared(memo)
    if type == "DELETED":
        op.seen_specs.forget(uid)
    elif op.seen_specs.changed(uid, str(meta.get("generation", ""))):
        op.wakeups.wake(uid)
