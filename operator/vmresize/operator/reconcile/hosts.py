"""Host readiness that does not lie: a Host whose agent stopped reporting is not Ready.

The agent keeps ``status.heartbeat`` fresh and sets ``ready``/``Ready=True`` while it runs;
a frozen (SIGSTOPped) or cut-off agent cannot say otherwise, so the operator does: when the
heartbeat is older than the stale window it sets ``ready: false`` and ``Ready=Unknown``
with reason ``HeartbeatStale`` (what ``kubectl get hosts`` shows in READY). The agent's
next heartbeat sets them back. Writes are guarded by resourceVersion: a heartbeat that
lands meanwhile wins, and the next check looks again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from vmresize.api.host import Host
from vmresize.api.meta import Condition, set_condition
from vmresize.operator.errors import ApiConflict
from vmresize.operator.persistence.storage import Storage

STALE_REASON = "HeartbeatStale"


def stale_update(host: Host, now: datetime, window_seconds: float) -> Host | None:
    """``host`` marked not ready if its heartbeat is stale and it still claims readiness;
    None when nothing must change (pure)."""
    st = host.status
    if st is None:
        return None
    beat = st.heartbeat
    stale = beat is None or now - beat > timedelta(seconds=window_seconds)
    ready_cond = next((c for c in st.conditions if c.type == "Ready"), None)
    already = not st.ready and ready_cond is not None and ready_cond.status != "True"
    if not stale or already:
        return None
    age = "never" if beat is None else f"{(now - beat).total_seconds():.0f}s ago"
    cond = Condition(type="Ready", status="Unknown", reason=STALE_REASON,
                     message=f"the agent's last heartbeat was {age} (window "
                     f"{window_seconds:.0f}s): it may be frozen, cut off or dead")
    status = st.model_copy(update={"ready": False,
                                   "conditions": set_condition(st.conditions, cond, now)})
    return host.model_copy(update={"status": status})


def mark_stale(storage: Storage, now: datetime, window_seconds: float) -> list[str]:
    """Mark every Host with a stale heartbeat not ready; the names of those marked."""
    marked = []
    for host, _ in storage.watched_hosts():
        update = stale_update(host, now, window_seconds)
        if update is None:
            continue
        try:
            storage.replace_status(update)
        except ApiConflict:  # the agent (or an admin) wrote meanwhile: look again next time
            continue
        marked.append(host.name)
    return marked
