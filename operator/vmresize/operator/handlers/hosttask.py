"""kopf handler for HostTask: any change wakes the daemon of the task's owner.

The operator never changes a HostTask after creating it (its spec is immutable and its
status is the agent's), so this handler only reads the owner label.
"""

from __future__ import annotations

from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.api.naming import OWNER_UID_LABEL
from vmresize.operator.handlers.memo import shared_or_none


@kopf.on.event(GROUP, VERSION, "hosttasks")
def task_changed(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """Wake the daemon of the task's owner (by its UID label) so it reads the task now."""
    owner = labels.get(OWNER_UID_LABEL)
    op = shared_or_none(memo)   # events may arrive before start-up stored the state
    if owner and op is not None:
        op.wakeups.wake(owner)
