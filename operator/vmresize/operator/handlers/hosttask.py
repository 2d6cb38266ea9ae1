"""kopf handler for HostTask: any change wakes the daemon of the task's owner.

The operator never changes a HostTask after creating it (its spec is immutable and its
status is the agent's), so this handler only reads the owner label.
"""

from __future__ import annotations

from typing import Any

import kopf

from vmresize.api.meta import GROUP, VERSION
from vmresize.api.naming import OWNER_UID_LABEL


@kopf.on.event(GROUP, VERSION, "hosttasks")
def task_changed(labels: Any, memo: kopf.Memo, **_: Any) -> None:
    """Wake the daemon of the task's owner (by its UID label) so it reads the task now."""
    owner = labels.get(OWNER_UID_LABEL)
    if owner and hasattr(memo, "wakeups"):
        memo.wakeups.wake(owner)
