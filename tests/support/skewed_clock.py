"""An agent whose machine's clock is wrong, for the fault matrix's "agent clock" cells.

Run as an agent process's prelude (``AgentProcess(prelude=prelude(offset))``), before any of
the agent's modules is imported: every timestamp the agent writes (its heartbeats, its task
stamps, its orphan records: all from ``kube.client.utcnow``) is ``offset`` seconds off.
libfaketime would be the real thing, but under it Python's ``time.sleep`` fails with EINVAL
on this libc, and the agent's monotonic clock must stay true anyway (so is a real machine's).
"""

from __future__ import annotations

from datetime import datetime, timedelta


def prelude(offset: float) -> str:
    """The prelude that shifts the agent's written timestamps by ``offset`` seconds."""
    return f"from tests.support.skewed_clock import shift; shift({float(offset)!r})"


def shift(offset: float) -> None:
    """Shift ``kube.client.utcnow`` in this process (before its importers bind it)."""
    from vmresize.agent.kube import client

    real = client.utcnow

    def skewed() -> datetime:
        return real() + timedelta(seconds=offset)

    client.utcnow = skewed
