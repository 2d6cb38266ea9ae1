"""kopf handler for HostTask: a change wakes the daemon of the task's owner.

The operator never changes a HostTask after creating it (its spec is immutable and its
status is the agent's), so this handler only reads the owner label. It is what moves a
waiting resize or instance on when its task progresses, ends or disappears (the daemons do
not poll). Only a change of what the owner's step reads wakes it: after a re-list kopf
hands over every task again, and the unchanged ones must not cost their owners a step
each; and a change of the metadata alone (the agent's kopf records that it handled the
task, one patch per task) or of the heartbeat alone changes no decision (the step
watchdog looks at the heartbeat at its own deadline), so it costs no step either. Every
change is noted, though, as a sign of the agent's life on the operator's clock
(:mod:`vmresize.operator.persistence.sightings`), which that watchdog judges.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.api.naming import OWNER_UID_LABEL
from vmresize.operator.handlers.memo import shared_or_none


def _decisive(status: kopf.Status) -> str:
    """A digest of what of the task's status the owner's step decides from: all of it but
    the heartbeat (a digest: the handler keeps one per task)."""
    text = json.dumps({k: v for k, v in dict(status).items() if k != "heartbeat"},
                      sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@kopf.on.event(GROUP, VERSION, "hosttasks")
async def task_changed(type: str, uid: str, labels: kopf.Labels, status: kopf.Status,
                       meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """Wake the daemon of the task's owner (by its UID label) so it reads the task now."""
    op = shared_or_none(memo)   # events may arrive before start-up stored the state
    if op is None:
        return
    owner = labels.get(OWNER_UID_LABEL)
    if type == "DELETED":
        op.seen_tasks.forget(uid)
        op.storage.sightings.forget(("task", uid))
    else:
        # The same note as the step's own read of the task (Storage.task_heard).
        op.storage.sightings.see(("task", uid), str(meta.get("resourceVersion", "")))
        if not op.seen_tasks.changed(uid, _decisive(status)):
            return
    if owner:
        op.wakeups.wake(owner)
