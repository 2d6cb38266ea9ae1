"""Confirm (source), CleanupDest (destination) and Destroy: the domain and its files go.

Each acts only once the fence says the owner's status names this very task (invariant 7),
and only on a domain its Instance owns (:mod:`ownership`). Confirm refuses a source that
runs: both copies would then be running, and the one to drop is for a person to choose.
"""

from __future__ import annotations

import asyncio

from vmresize.agent import ownership
from vmresize.agent.errors import DomainNotFoundError, StepError
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.steps.context import StepContext, StepOutcome
from vmresize.agent.vmfiles import disks, markers, wholevm
from vmresize.api.hosttask import HostTaskSpec, TaskAction, TaskResult


async def delete_copy(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """Confirm (source), CleanupDest (destination), Destroy: domain and disk go."""
    name = spec.domain_name
    await ctx.check_fence(spec)
    exists = await ctx.hv.exists(name) if name else False
    if name and exists and spec.action == TaskAction.CONFIRM \
            and await ctx.hv.state(name) != PowerState.SHUTOFF:
        raise StepError(
            f"refusing to confirm: the source {name} runs on {ctx.host} although the "
            "resize holds it, so both copies run; shut down the copy to drop, then "
            "delete this HostTask so the operator creates it again", retryable=False)
    if name and exists:
        # CleanupDest acts on a name it never checked before: only our own copy goes.
        # Confirm and Destroy act on the Instance's own domain, which may predate
        # recorded owners: unowned is taken as ours there, another owner never is.
        await ownership.check(ctx.hv, spec, name, spec.action.value,
                              stamp_unowned=spec.action is not TaskAction.CLEANUP_DEST)
        try:
            await ctx.hv.destroy(name)
            await ctx.hv.undefine(name)
        except DomainNotFoundError:
            pass
    if spec.transfer_id and spec.action == TaskAction.CLEANUP_DEST:
        ctx.transfer.forget(spec.transfer_id)
    if spec.disks:
        markers.remove(ctx.serial_log(wholevm.root_disk(spec.disks).path))
        await asyncio.to_thread(wholevm.delete, ctx.root, ctx.transfer, spec,
                                markers.ALL_SUFFIXES)
    elif spec.disk_path:
        rel = spec.disk_path
        for extra in (*markers.ALL_SUFFIXES, *wholevm.TRANSFER_SUFFIXES):
            markers.remove(ctx.sidecar(rel, extra))
        markers.remove(ctx.serial_log(rel))
        await asyncio.to_thread(disks.remove, ctx.root, rel)
    what = name or spec.disk_path or "nothing"
    return StepOutcome(TaskResult(domain_name=name, disk_path=spec.disk_path,
                                  power_state="Deleted"), f"deleted {what}")
