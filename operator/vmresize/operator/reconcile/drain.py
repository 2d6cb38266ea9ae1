"""One pass of a HostDrain: load what it sees, plan (pure), record, then act.

Reads the drain, its Host, every Instance and the drain's VMResizes; asks
:func:`vmresize.operator.decisions.drain.plan`; writes the status (guarded by the
drain's resourceVersion, so a pass that raced another write starts again from a fresh
read); only then disables the Host and creates the VMResizes the status records. A crash
in between is redone by the next pass: the status already names the moves, and creating
one that exists is harmless.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from vmresize.operator.decisions import drain as planner
from vmresize.operator.persistence.drains import DrainStore
from vmresize.operator.reconcile.engine import Outcome


def reconcile(store: DrainStore, name: str, poll_seconds: float, now: datetime) -> Outcome:
    """One pass of HostDrain ``name``; ``wake_at`` asks for the next one (a drain watches
    its moves by looking again: a handful of objects, every few seconds)."""
    d = store.drain(name)
    if d is None:
        return Outcome(done=True)
    host = store.storage.host(d.spec.host)
    p = planner.plan(d, host, store.storage.instances(), store.resizes(d.uid), now)
    changed = p.status != d.status
    if changed:
        d = store.write_status(d.model_copy(update={"status": p.status}))
    if p.disable_host is not None:
        store.disable_host(d.spec.host, p.disable_host)
    for new in p.creates:
        store.create_resize(d, new)
    return Outcome(done=p.done, changed=changed and not p.done, events=p.events,
                   wake_at=now + timedelta(seconds=poll_seconds))
