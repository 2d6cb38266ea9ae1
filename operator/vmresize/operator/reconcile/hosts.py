"""Host readiness that does not lie: a Host whose agent stopped reporting is not Ready.

The agent keeps ``status.heartbeat`` fresh and sets ``ready``/``Ready=True`` while it runs;
a frozen (SIGSTOPped) or cut-off agent cannot say otherwise, so the operator does: when it
has seen no change of the heartbeat for longer than the stale window, on its own
monotonic clock (:mod:`vmresize.operator.decisions.liveness`: the agent's stamp is never
compared with the operator's clock, issue 18 finding 4), it sets ``ready: false`` and
``Ready=Unknown`` with reason ``HeartbeatStale`` (what ``kubectl get hosts`` shows in
READY). The agent's next heartbeat sets them back. Writes are guarded by resourceVersion:
a heartbeat that lands meanwhile wins, and the next check looks again.
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.host import Host
from vmresize.api.meta import Condition, set_condition
from vmresize.operator.decisions.liveness import silent_for, stale
from vmresize.operator.errors import ApiConflictError
from vmresize.operator.persistence.storage import Storage

STALE_REASON = "HeartbeatStale"


def stale_update(host: Host, heard: float | None, clock: float, window_seconds: float,
                 now: datetime) -> Host | None:
    """``host`` marked not ready if the operator has seen no change of its heartbeat for
    longer than the window (``heard``, ``clock``: the operator's monotonic clock, None: it
    never beat) and it still claims readiness; None when nothing must change (pure).
    ``now`` (the operator's wall clock) only stamps the condition."""
    st = host.status
    if st is None:
        return None
    ready_cond = next((c for c in st.conditions if c.type == "Ready"), None)
    already = not st.ready and ready_cond is not None and ready_cond.status != "True"
    if not stale(heard, clock, window_seconds) or already:
        return None
    age = ("never beat" if heard is None
           else f"no heartbeat seen for {silent_for(heard, clock):.0f}s")
    cond = Condition(type="Ready", status="Unknown", reason=STALE_REASON,
                     message=f"the agent's heartbeat: {age} (window "
                     f"{window_seconds:.0f}s, on the operator's clock): it may be frozen, "
                     "cut off or dead")
    status = st.model_copy(update={"ready": False,
                                   "conditions": set_condition(st.conditions, cond, now)})
    return host.model_copy(update={"status": status})


def mark_stale(storage: Storage, now: datetime, window_seconds: float) -> list[str]:
    """Mark every Host with a stale heartbeat not ready; the names of those marked."""
    marked = []
    clock = storage.clock()
    for host, state in storage.watched_hosts():
        update = stale_update(host, state.heard, clock, window_seconds, now)
        if update is None:
            continue
        try:
            storage.replace_status(update)
        except ApiConflictError:  # the agent (or an admin) wrote meanwhile: look again next time
            continue
        marked.append(host.name)
    return marked
