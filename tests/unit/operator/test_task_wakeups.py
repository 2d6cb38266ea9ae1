"""Which HostTask events wake the owner's daemon: a change of what its step reads, not a
heartbeat alone nor a change of the metadata alone (the agent's kopf annotates each task
it handled), and not the same status handed over again after a re-list."""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client

from vmresize.api.naming import OWNER_UID_LABEL
from vmresize.operator.handlers import hosttask
from vmresize.operator.handlers.memo import Shared, put
from vmresize.operator.persistence.hostview import HostView
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile.driver import Locks, Wakeups
from vmresize.operator.settings import Settings

OWNER = "0b0c1d2e-0000-4000-8000-000000000001"


async def test_only_a_decisive_status_change_wakes_the_owner() -> None:
    memo = kopf.Memo()
    op = Shared(settings=Settings.from_env({}), storage=Storage(api=client.ApiClient()),
                wakeups=Wakeups(), locks=Locks(), hosts=HostView())
    put(memo, op)
    woken = op.wakeups.event(OWNER)

    async def event(status: dict[str, Any], type: str = "MODIFIED") -> bool:
        woken.clear()
        await hosttask.task_changed(type=type, uid="t1", labels={OWNER_UID_LABEL: OWNER},
                                    status=status, meta={"resourceVersion": "1"}, memo=memo)
        return woken.is_set()

    running = {"phase": "Running", "attempt": 1, "heartbeat": "2026-11-25T20:00:00+00:00"}
    assert await event({}, "ADDED")                      # created: the owner looks
    assert await event(running)                          # accepted
    assert not await event(running)                      # the agent's kopf annotated it
    assert not await event({**running, "heartbeat": "2026-11-25T20:00:05+00:00"})
    assert await event({**running, "progress": {"bytesDone": 1, "bytesTotal": 2}})
    assert await event({**running, "phase": "Succeeded"})
    assert await event({}, "DELETED")                    # gone: the owner looks
    assert await event({}, "ADDED")                      # and a new one is news again
