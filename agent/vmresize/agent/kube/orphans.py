"""The fence of abandoned copies, read from and marked in this agent's own Host.

The operator records a copy an admin abandoned on this host in ``Host.status.orphans``
(:mod:`vmresize.agent.orphans` says what the agent does with it). This module reads the
records not yet cleaned, runs the reaper over them (once at startup, before any task is
taken, then every few seconds), marks each one cleaned (a merge patch of its own
``cleanedAt``, the only part of the record the agent writes), and answers the executor's
question before any start: is this domain a fenced copy?
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from vmresize.agent import metrics, orphans
from vmresize.agent.errors import AgentError, KubeError, KubeNotFoundError, StepError
from vmresize.agent.kube.client import AgentKube, utcnow
from vmresize.api.host import OrphanCopy

log = logging.getLogger(__name__)


class HostOrphans:
    """This host's abandoned copies: the start fence and the reaper's records."""

    def __init__(self, kube: AgentKube, host: str) -> None:
        self.kube, self.host = kube, host

    def _read(self) -> dict[str, OrphanCopy]:
        try:
            h = self.kube.get_host(self.host)
        except KubeNotFoundError:
            return {}
        return {k: o for k, o in (h.status.orphans if h.status else {}).items()
                if o.cleaned_at is None}

    async def pending(self) -> dict[str, OrphanCopy]:
        """The records not yet cleaned, by the abandoning resize's UID."""
        return await asyncio.to_thread(self._read)

    async def fenced(self, name: str) -> str | None:
        """Why ``name`` must not start here (the executor asks right before every start);
        StepError (retryable) when the Host cannot be read: better not start than start
        a fenced copy."""
        try:
            found = await self.pending()
        except KubeError as e:
            raise StepError(f"cannot read Host {self.host} to check its abandoned copies: {e}",
                            retryable=True) from e
        return orphans.fenced(found.values(), name)

    async def mark_cleaned(self, key: str) -> None:
        """Set ``cleanedAt`` of the record ``key`` (a merge patch of that field only)."""
        doc = {"orphans": {key: {"cleanedAt": utcnow().isoformat()}}}
        await asyncio.to_thread(self.kube.patch_host_status, self.host, doc)

    async def reap_all(self, reap: Callable[[OrphanCopy], Awaitable[str]]) -> int:
        """Reap every record not yet cleaned and mark it; the number reaped. A failure is
        logged and the record left for the next round."""
        n = 0
        for key, o in (await self.pending()).items():
            try:
                what = await reap(o)
                await self.mark_cleaned(key)
            except (AgentError, OSError) as e:
                metrics.count_error(e)
                log.warning("abandoned copy %s of %s not reaped yet: %s", o.domain_name,
                            o.owner, e)
                continue
            log.warning("abandoned copy %s of %s (abandoned at %s): %s", o.domain_name,
                        o.owner, o.abandoned_at.isoformat(), what)
            n += 1
        return n

    async def reap_forever(self, reap: Callable[[OrphanCopy], Awaitable[str]],
                           interval: float) -> None:
        """:meth:`reap_all` every ``interval`` seconds until cancelled; never raises."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_all(reap)
            except (AgentError, OSError) as e:
                metrics.count_error(e)
                log.warning("reading the abandoned copies of %s failed: %s", self.host, e)
