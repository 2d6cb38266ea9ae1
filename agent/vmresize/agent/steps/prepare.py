"""Prepare (destination): check the space, make the instance directory, accept the files.

Nothing is accepted unless all that will land fits (:func:`wholevm.ensure_space`), counting
what transfers already accepted on that filesystem may still write. Accepting is
idempotent: a resumed Prepare finds its transfers, or the files received and verified.
"""

from __future__ import annotations

import asyncio

from vmresize.agent.errors import TaskRefusedError, TransferRefusedError
from vmresize.agent.steps.context import StepContext, StepOutcome, need
from vmresize.agent.vmfiles import wholevm
from vmresize.api.hosttask import HostTaskSpec, TaskResult


async def prepare(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """Prepare: a task that lists the VM's files, or the single disk of older operators."""
    if spec.disks:
        return await _prepare_files(ctx, spec)
    a = spec.action
    rel = need(spec.disk_path, "diskPath", a)
    tid = need(spec.transfer_id, "transferId", a)
    size = need(spec.expected_bytes, "expectedBytes", a)
    final = ctx.abs(rel)
    known = ctx.transfer.received(tid)
    if known is None and final.exists():
        return StepOutcome(TaskResult(disk_path=rel), f"{rel} already received")
    if known is None:
        final.parent.mkdir(parents=True, exist_ok=True)
        wholevm.ensure_space(final.parent, size, ctx.transfer.pending_bytes(final.parent),
                             rel)
    try:
        ctx.transfer.expect(tid, rel, size)
    except TransferRefusedError as e:
        raise TaskRefusedError(f"cannot accept {rel}: {e}") from e
    return StepOutcome(TaskResult(disk_path=rel, size_bytes=size),
                       f"ready to receive {rel}")


async def _prepare_files(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    dest = ctx.abs(wholevm.root_disk(spec.disks).path).parent
    while not dest.exists() and dest != ctx.root:  # a new move's directory: not yet,
        dest = dest.parent  # but the filesystem it will be made on holds promises too
    promised = ctx.transfer.pending_bytes(dest)
    files, need_bytes = await asyncio.to_thread(wholevm.prepare, ctx.root, ctx.transfer,
                                                spec, promised=promised)
    return StepOutcome(TaskResult(disks=files, size_bytes=need_bytes),
                       f"ready to receive {len(files)} files ({need_bytes} bytes at most)")
