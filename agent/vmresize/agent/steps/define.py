"""Defining the Instance's domain on this host, and never another's.

Spawn and the single-disk Finish define from a flavor (:func:`define_for`); the whole-VM
Finish from the source's own definition (:func:`define_on`). Both leave a domain that
already runs from our disk alone, refuse one that runs from another disk, redefine a
shut-off namesake only if the Instance owns it (:mod:`ownership`), and record the
Instance as the owner of what they define.
"""

from __future__ import annotations

import logging

from vmresize.agent import ownership
from vmresize.agent.errors import TaskRefusedError
from vmresize.agent.hypervisor.domainxml import NewDisk
from vmresize.agent.hypervisor.protocol import DomainSpec, PowerState
from vmresize.agent.steps.context import StepContext
from vmresize.api.hosttask import HostTaskSpec, TaskFlavor

log = logging.getLogger(__name__)


async def define_for(ctx: StepContext, name: str, rel: str, flavor: TaskFlavor,
                     spec: HostTaskSpec, extra: tuple[NewDisk, ...] = ()) -> None:
    """Define ``name`` on the disk ``rel`` from ``flavor`` (``extra``: the flavor's own
    disks), unless it is defined on ``rel`` already (:func:`_clear_the_name`)."""
    if await _clear_the_name(ctx, spec, name, rel):
        return
    await ctx.hv.define(DomainSpec(
        name=name, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib, disk=ctx.abs(rel),
        serial_log=ctx.serial_log(rel), extra_disks=extra,
        interfaces=tuple(spec.interfaces)))
    await ownership.stamp(ctx.hv, spec, name)


async def define_on(ctx: StepContext, spec: HostTaskSpec, name: str, rel: str, xml: str
                    ) -> None:
    """Define ``name`` from ``xml`` (its root disk ``rel``), unless it is defined on
    ``rel`` already (:func:`_clear_the_name`)."""
    if await _clear_the_name(ctx, spec, name, rel):
        return
    await ctx.hv.define_xml(xml)
    await ownership.stamp(ctx.hv, spec, name)


async def _clear_the_name(ctx: StepContext, spec: HostTaskSpec, name: str, rel: str) -> bool:
    """True if ``name`` is defined on our disk ``rel`` (its path carries the Instance's
    UID): the Instance is recorded as its owner and nothing else is done. A domain of that
    name on another disk is never started: undefined while off if the Instance owns it
    (False: define ours), refused otherwise (it is not ours)."""
    if not await ctx.hv.exists(name):
        return False
    disk = await ctx.hv.disk_path(name)
    disk = disk.resolve() if disk is not None else None
    if disk == ctx.abs(rel):
        await ownership.stamp(ctx.hv, spec, name)
        return True
    if await ctx.hv.state(name) != PowerState.SHUTOFF:
        raise TaskRefusedError(f"a domain named {name} already runs from {disk}, not "
                          f"from {rel}; refusing to touch it")
    await ownership.check(ctx.hv, spec, name, "redefine")
    log.warning("domain %s pointed at %s; redefining it on %s", name, disk, rel)
    await ctx.hv.undefine(name)
    return False
