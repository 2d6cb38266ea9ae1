"""Host readiness watchdog: every few seconds, Hosts whose heartbeat is stale are marked
not ready (:mod:`vmresize.operator.reconcile.hosts`). :mod:`.host` keeps the gauges.

One loop per operator process, started with the operator, rather than a kopf timer per
Host: a timer would put a kopf finalizer on every Host (admins delete Hosts) and needs
write access to Host metadata. Replicas may all run it; the writes are guarded and
idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from vmresize.operator.errors import ApiUnavailable
from vmresize.operator.handlers.memo import shared_or_none
from vmresize.operator.reconcile import hosts

log = logging.getLogger(__name__)
CHECK_SECONDS = 5.0


async def _watch(memo: kopf.Memo) -> None:
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        op = shared_or_none(memo)
        if op is None:  # start-up has not stored the state yet
            continue
        storage, settings = op.storage, op.settings
        window = float(settings.heartbeat_stale_seconds)
        try:
            marked = await asyncio.to_thread(hosts.mark_stale, storage, datetime.now(UTC),
                                             window)
        except ApiUnavailable as e:
            log.warning("host heartbeat check failed: %s", e)
            continue
        for name in marked:
            log.warning("Host %s: heartbeat older than %.0fs; marked not ready", name, window)


@kopf.on.startup()
async def start_host_watchdog(memo: kopf.Memo, **_: Any) -> None:
    """Start the one heartbeat check loop of this operator process."""
    memo.host_watchdog = asyncio.create_task(_watch(memo))


@kopf.on.cleanup()
async def stop_host_watchdog(memo: kopf.Memo, **_: Any) -> None:
    """Stop the heartbeat check loop at shutdown."""
    task = getattr(memo, "host_watchdog", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
