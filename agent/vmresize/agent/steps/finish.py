"""Finish (destination): verify, then grow, define and start; the fence comes last.

The destination VM starts only from files whose checksums are the powered-off source's,
checked before anything changes them (invariant 2; the record of that is kept beside the
root disk, so a resumed Finish does not hash again). Then pre-copy's overlays are merged,
the flavor's disk sizes applied, the domain defined from the source's own definition
with only vCPUs, memory, paths and name changed (:mod:`define`), and, once the fence says
the owner still asks for this very Finish, started.
"""

from __future__ import annotations

import asyncio
import logging

from vmresize.agent.hypervisor.protocol import DomainSize
from vmresize.agent.steps import define
from vmresize.agent.steps.context import StepContext, StepOutcome, as_datetime, need
from vmresize.agent.vmfiles import disks, markers, moving, wholevm
from vmresize.api.hosttask import HostTaskSpec, TaskFlavor

log = logging.getLogger(__name__)


async def finish(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """Finish: a task that lists the VM's files, or the single disk of older operators."""
    name = need(spec.domain_name, "domainName", spec.action)
    flavor = need(spec.flavor, "flavor", spec.action)
    if spec.disks:
        return await _finish_files(ctx, spec, name, flavor)
    rel = need(spec.disk_path, "diskPath", spec.action)
    expected = need(spec.expected_checksum, "expectedChecksum", spec.action)
    verified = ctx.sidecar(rel, markers.VERIFIED_SUFFIX)
    # Whatever exists already, the disk must be the verified one (invariant 2): the
    # record is written before the grow and kept while the copy lives here.
    if not markers.verified_is(verified, expected):
        await _verify(ctx, spec, rel, expected)
        await asyncio.to_thread(markers.write_atomic, verified, expected + "\n")
    await asyncio.to_thread(disks.grow, ctx.root, rel, flavor.disk_gib)
    await define.define_for(ctx, name, rel, flavor, spec)
    size = await ctx.hv.get_size(name)
    wanted = DomainSize(vcpus=flavor.vcpus, memory_mib=flavor.memory_mib)
    if size != wanted:
        await ctx.hv.set_size(name, wanted)
    await ctx.check_fence(spec)   # a Finish frozen through a rollback: no 2nd copy
    await ctx.start(name)
    started = as_datetime(ctx.now())
    if spec.transfer_id:
        ctx.transfer.forget(spec.transfer_id)
    result = await ctx.describe(name, rel)
    result.checksum, result.started_at = expected, started
    return StepOutcome(result, f"started {name} with {flavor.vcpus} vCPU, "
                               f"{flavor.memory_mib} MiB, {flavor.disk_gib} GiB")


async def _verify(ctx: StepContext, spec: HostTaskSpec, rel: str, expected: str) -> None:
    state = ctx.transfer.received(spec.transfer_id) if spec.transfer_id else None
    await moving.verify_file(ctx.abs(rel), rel, expected, state, stall=ctx.checksum_stall)


async def _finish_files(ctx: StepContext, spec: HostTaskSpec, name: str, flavor: TaskFlavor
                        ) -> StepOutcome:
    """Finish from the source's own definition (only size, paths and name change)."""
    xml, files = await wholevm.arrive(ctx.root, ctx.transfer, spec, flavor,
                                      stall=ctx.checksum_stall)
    rd = wholevm.root_disk(spec.disks)
    await define.define_on(ctx, spec, name, rd.path, xml)
    await ctx.check_fence(spec)
    log.info("%s: defined, fence checked; starting", name)
    await ctx.start(name)
    started = as_datetime(ctx.now())
    log.info("%s: started", name)
    await asyncio.to_thread(wholevm.settle, ctx.root, ctx.transfer, spec)
    result = await ctx.describe(name, rd.path, rd.format)
    result.checksum, result.disks, result.started_at = rd.checksum, files, started
    return StepOutcome(result, f"started {name} with {flavor.vcpus} vCPU, "
                               f"{flavor.memory_mib} MiB from {len(spec.disks)} files")
