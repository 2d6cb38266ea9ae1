"""kopf handler for HostTask: a change wakes the daemon of the task's owner.

The operator never changes a HostTask after creating it (its spec is immutable and its
status is the agent's), so this handler only reads the owner label. It is what moves a
waiting resize or instance on when its task progresses, ends or disappears (the daemons do
not poll). Only a new resourceVersion wakes: after a re-list kopf hands over every task
again, and the unchanged ones must not cost their owners a step each.
"""

from __future__ import annotations

from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.api.naming import OWNER_UID_LABEL
from vmresize.operator.handlers.memo import shared_or_none


@kopf.on.event(GROUP, VERSION, "hosttasks")
async def task_changed(type: str, uid: str, labels: kopf.Labels, meta: kopf.Meta,
                       memo: kopf.Memo, **_: Any) -> None:
    """Wake the daemon of the task's owner (by its UID label) so it reads the task now."""
    op = shared_or_none(memo)   # events may arrive before start-up stored the state
    if op is None:
        return
    owner = labels.get(OWNER_UID_LABEL)
    if type == "DELETED":
        op.seen_tasks.forget(uid)
    elif not op.seen_tasks.changed(uid, str(meta.get("resourceVersion", ""))):
        return
    if owner:
        op.wakeups.wake(owner)
