"""Spawn and Adopt: how a domain becomes an Instance's.

Spawn makes the disk (blank or on a base image under ``<storage root>/images/``) and the
flavor's own disks, defines the domain and starts it. Adopt takes over a domain already
defined here, whose disk lies under the storage root, and lists its files (or says why it
could not move). Both record the Instance as the domain's owner (:mod:`ownership`); a
domain another Instance owns is never taken.
"""

from __future__ import annotations

import asyncio
import logging

from vmresize.agent.errors import TaskRefusedError
from vmresize.agent.steps import define
from vmresize.agent.steps.context import StepContext, StepOutcome, need
from vmresize.agent.vmfiles import disks, flavorfiles, wholevm
from vmresize.api.hosttask import HostTaskSpec

log = logging.getLogger(__name__)
IMAGES_DIR = "images"   # base images live in <storage root>/images/


async def spawn(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """Spawn: a new disk (blank, or on a base image), the flavor's disks, the domain, started."""
    a = spec.action
    name = need(spec.domain_name, "domainName", a)
    rel = need(spec.disk_path, "diskPath", a)
    flavor = need(spec.flavor, "flavor", a)
    if spec.base_image:
        base = f"{IMAGES_DIR}/{spec.base_image}"
        await asyncio.to_thread(disks.create_from_base, ctx.root, rel, base,
                                flavor.disk_gib)
    else:
        await asyncio.to_thread(disks.create_blank, ctx.root, rel, flavor.disk_gib,
                                seed=spec.seed_pattern)
    files, extra = await asyncio.to_thread(flavorfiles.spawn, ctx.root, rel, flavor)
    await define.define_for(ctx, name, rel, flavor, spec, extra)
    await ctx.start(name)
    result = await ctx.describe(name, rel)
    result.disks = files
    return StepOutcome(result, f"spawned {name} with {len(files)} disk(s)")



async def adopt(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """Adopt: take over an existing domain under the storage root, and list its files."""
    name = need(spec.domain_name, "domainName", spec.action)
    disk = await ctx.hv.disk_path(name)
    if disk is None:
        raise TaskRefusedError(f"domain {name} has no file-backed disk")
    resolved = disk.resolve()
    if not resolved.is_relative_to(ctx.root):
        raise TaskRefusedError(f"disk of {name} is outside the storage root: {disk}")
    rel = str(resolved.relative_to(ctx.root))
    ctx.abs(rel)  # the same confinement every other step applies
    # The domain remembers who adopted it: a second Instance (another tenant's, or one
    # racing the first past the operator's check) is refused. Re-running our own Adopt
    # after a crash finds our UID and goes on.
    owner = await ctx.hv.owner(name)
    if owner and owner != spec.owner_uid:
        raise TaskRefusedError(f"domain {name} is owned by the Instance with UID {owner}; "
                          "a domain that an Instance owns is never adopted again")
    if spec.owner_uid and owner != spec.owner_uid:
        await ctx.hv.set_owner(name, spec.owner_uid)
    xml = await ctx.hv.export(name)
    files, why, fmt = await asyncio.to_thread(wholevm.adopted, xml, ctx.root, name)
    result = await ctx.describe(name, rel, fmt)
    result.disks, result.unmovable = files or None, [why] if why else None
    return StepOutcome(result, f"adopted {name}" + (f"; {why}" if why else ""))
