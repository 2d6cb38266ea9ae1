"""Host readiness watchdog and claim sweep: every few seconds, Hosts whose heartbeat is
stale are marked not ready (:mod:`vmresize.operator.reconcile.hosts`); every
``SWEEP_SECONDS``, claims whose holder is gone are released
(:func:`vmresize.operator.reconcile.sweep.sweep_host`), and then every VMQuota's
charges are brought in line with the claims
(:func:`vmresize.operator.persistence.quota.resync`). :mod:`.host` keeps the gauges.

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

from vmresize.operator.errors import ApiUnavailableError
from vmresize.operator.handlers.memo import shared_or_none
from vmresize.operator.persistence import quota
from vmresize.operator.persistence.storage import Storage
from vmresize.operator.reconcile import hosts, sweep

log = logging.getLogger(__name__)
CHECK_SECONDS = 5.0
#: Leaked claims are rare and cost only capacity meanwhile.
SWEEP_SECONDS = 30.0


def _sweep_claims(storage: Storage) -> None:
    for host, gone in sweep.sweep_claims(storage):
        log.warning("host %s: released claims of gone holders: %s", host, ", ".join(gone))
    for q in storage.quotas(None):   # their charges follow the claims (:mod:`.quota`)
        quota.resync(storage, q.namespace, q.name)


async def _watch(memo: kopf.Memo) -> None:
    loop = asyncio.get_running_loop()
    last_sweep = loop.time()
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
        except ApiUnavailableError as e:
            log.warning("host heartbeat check failed: %s", e)
            continue
        for name in marked:
            log.warning("Host %s: no heartbeat seen for %.0fs; marked not ready", name, window)
        if loop.time() - last_sweep >= SWEEP_SECONDS:
            last_sweep = loop.time()
            try:
                await asyncio.to_thread(_sweep_claims, storage)
            except ApiUnavailableError as e:
                log.warning("claim sweep failed: %s", e)


@kopf.on.startup()
async def start_host_watchdog(memo: kopf.Memo, **_: Any) -> None:
    """Start the one heartbeat-check and claim-sweep loop of this operator process."""
    memo.host_watchdog = asyncio.create_task(_watch(memo))


@kopf.on.cleanup()
async def stop_host_watchdog(memo: kopf.Memo, **_: Any) -> None:
    """Stop the heartbeat check loop at shutdown."""
    task = getattr(memo, "host_watchdog", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
