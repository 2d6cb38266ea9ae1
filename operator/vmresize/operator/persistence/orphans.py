"""Fencing an abandoned copy on its Host: ``status.orphans``, written like a claim.

When an admin abandons a destination (``VMResize.spec.abandonDestination``) the operator
records the copy left there on that Host before the VM is started on its source. The
record is the fence: the host's agent destroys that copy when it runs again and never
starts it. Written with the resourceVersion read (as claims are), idempotent: a record
that exists is left as it is (its agent may have marked it cleaned already).
"""

from __future__ import annotations

from vmresize.api.host import Host, OrphanCopy
from vmresize.operator.persistence.claims import _update_host
from vmresize.operator.persistence.storage import Storage


def fence(storage: Storage, host_name: str, owner_uid: str, orphan: OrphanCopy) -> bool:
    """Record ``orphan`` on ``host_name`` under the abandoning resize's UID; False when the
    Host is gone (then no agent is left to start the copy either)."""

    def change(host: Host) -> bool | None:
        assert host.status is not None
        if owner_uid in host.status.orphans:
            return None
        host.status.orphans[owner_uid] = orphan
        return True

    return _update_host(storage, host_name, change)
