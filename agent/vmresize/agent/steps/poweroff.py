"""The source's side of a move: power-off (graceful, then forced) and holding it aside.

Used by MigrateDisk (:mod:`migrate`) and RestoreSource (:mod:`restore`). The power-off
grace counts from the first request, kept across agent restarts; a held source's
definition moves aside (written next to its disk, then undefined) so nothing can start it
by accident while its disk keeps its path and bytes (invariant 1).

A power-off is never left half done. Once MigrateDisk has asked the guest to shut down,
the guest may go on shutting down whatever happens to the step (cancelled because the
resize rolls back, failed, its agent killed); libvirt cannot tell a guest about to stop
from one that runs. The ``.poweroff`` marker, written before the request, says one may be
under way: RestoreSource finishes it (the rest of the grace, then forced) before it starts
the VM, and reports Running only once it has seen the domain run after that start.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import NamedTuple

from vmresize.agent.errors import StepError
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.steps.context import StepContext
from vmresize.agent.vmfiles import markers
from vmresize.api.hosttask import PowerOff

log = logging.getLogger(__name__)
POWER_POLL_SECONDS = 0.05
"""How often a shutting-down VM's state is read: every poll past its end is downtime,
and a state read is one cheap libvirt call."""
START_SEEN_SECONDS = 30.0
"""How long RestoreSource waits to see the domain running after its start. libvirt's
start returns once QEMU runs the guest, so this only bounds a hypervisor that says
otherwise (the step then fails, retryable)."""


def power_off_phrase(how: PowerOff | None) -> str:
    """The start of MigrateDisk's message: how the VM went off, for people."""
    if how is PowerOff.GRACEFUL:
        return "powered off gracefully (ACPI); "
    return "forced off after the power-off timeout; " if how is PowerOff.FORCED else ""


class Stopped(NamedTuple):
    """How the VM went off and when it was seen off (wall clock): the downtime's start,
    not the request's. A guest that ignores ACPI runs through the grace period."""

    how: PowerOff
    seen_off_at: float


async def power_off(ctx: StepContext, name: str, grace: float, requested_at: float) -> Stopped:
    """Graceful shutdown, then destroy once ``grace`` seconds have passed since the
    first request (``requested_at``, wall clock, kept across agent restarts).
    Returns which of the two it took and when the domain was seen shut off (the poll
    that saw it, or the end of destroy), for the task's result. A domain found off
    already stopped at the latest when it was first asked (``requested_at``: a
    resumed step never under-reports the downtime)."""
    if await ctx.hv.state(name) == PowerState.SHUTOFF:
        return Stopped(PowerOff.ALREADY_OFF, min(requested_at, ctx.now()))
    await ctx.hv.shutdown(name)
    loop = asyncio.get_running_loop()
    remaining = max(0.0, grace - max(0.0, ctx.now() - requested_at))
    deadline = loop.time() + remaining
    while loop.time() < deadline:
        if await ctx.hv.state(name) == PowerState.SHUTOFF:
            log.info("%s shut down gracefully (ACPI)", name)
            return Stopped(PowerOff.GRACEFUL, ctx.now())
        await asyncio.sleep(POWER_POLL_SECONDS)
    log.info("%s did not shut down within %.0fs; forcing it off", name, grace)
    await ctx.hv.destroy(name)
    return Stopped(PowerOff.FORCED, ctx.now())


async def finish_power_off(ctx: StepContext, name: str, marker: Path, owner_uid: str | None,
                            grace: float) -> PowerOff | None:
    """RestoreSource, the domain defined: finish a power-off that this resize asked for
    (``marker`` is its record) and that may still be under way in the guest, so the
    start that follows is a real one. The guest gets what is left of the grace it was
    given (``grace`` if the marker does not say), then it is forced off. None when this
    resize asked for no power-off; else how it ended (``ALREADY_OFF``: it had)."""
    mine = markers.PowerOff.parse(markers.read(marker))
    if mine is None or not mine.of_owner(owner_uid):
        return None
    how = (await power_off(ctx, name, mine.grace if mine.grace is not None else grace,
                                 mine.requested_at)).how
    if how is not PowerOff.ALREADY_OFF:
        log.info("%s: finished the power-off its move had begun (%s)", name, how.value)
    return how


async def seen_running(ctx: StepContext, name: str) -> None:
    """After a start: return once the domain is seen running (StepError, retryable, if
    it is not within :data:`START_SEEN_SECONDS`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_SEEN_SECONDS
    while (state := await ctx.hv.state(name)) != PowerState.RUNNING:
        if loop.time() > deadline:
            raise StepError(f"{name} was started but is {state.value}, not running, "
                            f"{START_SEEN_SECONDS:.0f} s later", retryable=True)
        await asyncio.sleep(POWER_POLL_SECONDS)


async def power_off_and_hold(ctx: StepContext, name: str, grace: float, requested_at: float,
                              held: Path) -> Stopped:
    """Power ``name`` off (ACPI within ``grace``, then forced), then hold its definition
    at ``held`` so nothing starts it again until a step decides."""
    stopped = await power_off(ctx, name, grace, requested_at)
    await hold(ctx, name, held)
    log.info("%s held: its definition set aside", name)
    return stopped


async def hold(ctx: StepContext, name: str, held: Path) -> None:
    """Keep the source from being started by accident: its definition moves aside
    (written, then undefined); the disk keeps its path and bytes (invariant 1)."""
    if await ctx.hv.state(name) != PowerState.SHUTOFF:
        raise StepError(f"{name} is not shut off; not holding it", retryable=True)
    if markers.read(held) is None:
        xml = await ctx.hv.definition(name)
        await asyncio.to_thread(markers.write_atomic, held, xml)
    await ctx.hv.undefine(name)

