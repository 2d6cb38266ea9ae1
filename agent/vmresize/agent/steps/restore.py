"""RestoreSource (source): the VM comes back on its source, exactly as it was held.

The definition MigrateDisk moved aside is defined again (or, if the domain is gone and
nothing was held, the one it captured, after pre-copy's overlays are committed offline).
A power-off the move had begun is finished first (:mod:`poweroff`), so the start is a
real one; the old vCPUs and memory are set back; the VM is started and reported only once
seen running; pre-copy's overlays are then merged back into their disks (:mod:`precopy`).
"""

from __future__ import annotations

import asyncio

from vmresize.agent import ownership
from vmresize.agent.errors import StepError
from vmresize.agent.hypervisor.protocol import DomainSize
from vmresize.agent.steps import poweroff, precopy
from vmresize.agent.steps.context import StepContext, StepOutcome, need
from vmresize.agent.vmfiles import markers, wholevm
from vmresize.api.hosttask import HostTaskSpec, PowerOff


async def restore_source(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """RestoreSource: the held source, defined again exactly, started, seen running."""
    a = spec.action
    name = need(spec.domain_name, "domainName", a)
    rel = need(spec.disk_path, "diskPath", a)
    held = ctx.sidecar(rel, markers.HELD_SUFFIX)
    xml = markers.read(held)
    if xml is not None:  # the definition MigrateDisk moved aside, back exactly
        if not await ctx.hv.exists(name):
            await ctx.hv.define_xml(xml)
            await ownership.stamp(ctx.hv, spec, name)
        markers.remove(held)
    elif not await ctx.hv.exists(name):
        await precopy.merge_offline(ctx, rel)  # the captured definition names the disks below
        await _define_captured(ctx, name, rel)
        await ownership.stamp(ctx.hv, spec, name)
    # Resized and started below: only if it is ours (a namesake defined meanwhile is not;
    # one that records no owner is a source held before owners were recorded).
    await ownership.check(ctx.hv, spec, name, "restore", stamp_unowned=True)
    # A power-off MigrateDisk asked for may still be under way in the guest (the step
    # cancelled or failed after the request): finished first, or the start below would
    # do nothing and the guest stop afterwards. Its record goes once the VM is off, so
    # a retry after the start never powers the restarted VM off again.
    marker = ctx.sidecar(rel, markers.POWEROFF_SUFFIX)
    how = await poweroff.finish_power_off(ctx, name, marker, spec.owner_uid,
                                          float(spec.power_off_timeout_seconds))
    markers.remove(marker)
    if spec.flavor is not None:
        old = DomainSize(vcpus=spec.flavor.vcpus, memory_mib=spec.flavor.memory_mib)
        if await ctx.hv.get_size(name) != old:
            await ctx.hv.set_size(name, old)
    await ctx.start(name)
    await poweroff.seen_running(ctx, name)
    await precopy.merge_back(ctx, name, rel)  # pre-copy's overlays, once the VM runs again
    fmt = wholevm.root_format(await ctx.hv.export(name), ctx.root, rel)
    done = ("" if how in (None, PowerOff.ALREADY_OFF) else
            f"finished the power-off the move had begun ({how.value}); ")
    return StepOutcome(await ctx.describe(name, rel, fmt),
                       f"{done}restarted {name} on its source")


async def _define_captured(ctx: StepContext, name: str, rel: str) -> None:
    """A source domain that is gone is defined again from MigrateDisk's capture."""
    xml = await asyncio.to_thread(wholevm.captured, ctx.root, rel)
    if xml is None:
        raise StepError(f"domain {name} not found and no definition was captured next "
                        "to its disk", retryable=False)
    await ctx.hv.define_xml(xml)
