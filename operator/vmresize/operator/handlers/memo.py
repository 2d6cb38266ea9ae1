"""What the operator's handlers share through kopf's memo, behind one typed accessor.

kopf hands every handler the same ``kopf.Memo`` (an attribute bag). The start-up handler
puts one :class:`Shared` in it; every other handler reads it with :func:`shared`, so the
bag's contents are typed in one place and a handler that runs before start-up finished
gets a clear temporary error instead of an ``AttributeError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import kopf

from vmresize.operator.persistence.hostview import HostView
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile.driver import Locks, Seen, Wakeups
from vmresize.operator.settings import Settings

KEY = "vmresize"


@dataclass(frozen=True)
class Shared:
    """The operator's process-wide state: settings, the API storage and in-memory helpers."""

    settings: Settings
    storage: Storage
    wakeups: Wakeups
    locks: Locks
    #: The watch-fed Hosts (the storage reads the same view); fed by :mod:`.host`.
    hosts: HostView
    #: resourceVersions of HostTasks and generations of VMResizes last seen by the handlers
    #: that wake daemons (only a change wakes one).
    seen_tasks: Seen = field(default_factory=Seen)
    seen_specs: Seen = field(default_factory=Seen)


def put(memo: kopf.Memo, state: Shared) -> None:
    """Store the process-wide state (start-up does this once)."""
    memo[KEY] = state


def shared(memo: kopf.Memo) -> Shared:
    """The process-wide state; a TemporaryError while start-up has not stored it yet."""
    state = memo.get(KEY)
    if not isinstance(state, Shared):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return state


def shared_or_none(memo: kopf.Memo) -> Shared | None:
    """The process-wide state, or None before start-up stored it (for handlers that wait)."""
    state = memo.get(KEY)
    return state if isinstance(state, Shared) else None
