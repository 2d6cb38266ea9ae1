"""MigrateDisk (source): everything that can refuse, then the power-off, then the copy.

Refuse before the power-off (invariant 10): the flavor Finish's rewrite would refuse, and
what cannot move, are found while the VM runs. Then, for a task that lists the VM's
files, they are captured and, if the VM runs and the task lists overlays, pre-copied
(:mod:`precopy`). The fence is checked right before the power-off (invariant 7); the VM
goes off (:mod:`poweroff`) and is held, and what is left is sent, every file checksummed.
From the power-off on the source's files are only read (invariant 1).

The result says how the VM went off, when it was asked and when it was seen off (the
downtime counts from there), with the checksums and sizes of what was sent.
"""

from __future__ import annotations

from vmresize.agent import ownership
from vmresize.agent.errors import FlavorRefusedError, StepError
from vmresize.agent.hypervisor import domainxml
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.steps import poweroff, precopy
from vmresize.agent.steps.context import StepContext, StepOutcome, as_datetime, need
from vmresize.agent.vmfiles import markers, wholevm
from vmresize.api.hosttask import HostTaskSpec, PowerOff, TaskFlavor, TaskResult
from vmresize.api.vmdisks import VMDisk


async def refuse_flavor(ctx: StepContext, name: str, flavor: TaskFlavor) -> None:
    """MigrateDisk, the VM still defined: refuse, before anything is done to it, a
    flavor that Finish's rewrite of this very definition would refuse (invariant 10)."""
    xml = await ctx.hv.export(name)
    why = domainxml.rewrite_refusal(xml, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib)
    if why is not None:
        raise FlavorRefusedError(f"{name} cannot take {flavor.vcpus} vCPU and "
                            f"{flavor.memory_mib} MiB: {why}; refused before any "
                            "power-off, the VM was not touched")


async def migrate_disk(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """MigrateDisk (source): capture (and pre-copy), fence, power off and hold, send."""
    a = spec.action
    name = need(spec.domain_name, "domainName", a)
    rel = need(spec.disk_path, "diskPath", a)
    peer = need(spec.peer, "peer", a)
    tid = need(spec.transfer_id, "transferId", a)
    defined = await ctx.hv.exists(name)
    files, shared, live, moved = list[VMDisk](), False, list[VMDisk](), list[VMDisk]()
    if spec.disks:  # the whole VM: listed, checked, captured (pre-copied if it runs
        # and the task lists overlays) before any power-off
        if defined and spec.flavor is not None:
            await refuse_flavor(ctx, name, spec.flavor)
        files, shared, live = await precopy.before_power_off(ctx, spec, name, peer, defined)
        rel = wholevm.root_disk(live or files).path
    elif defined:
        wholevm.refuse_unmovable(await ctx.hv.export(name), ctx.root, name)
    held = ctx.sidecar(rel, markers.HELD_SUFFIX)
    marker = ctx.sidecar(rel, markers.POWEROFF_SUFFIX)
    if defined:
        await ctx.check_fence(spec)
        # The Instance's own domain since its Spawn or Adopt: one that records no
        # owner (made before owners were recorded) is stamped, another's is refused.
        await ownership.check(ctx.hv, spec, name, "power off and hold",
                              stamp_unowned=True)
        tag = f"{spec.owner_uid or '-'}/{tid}"
        grace = float(spec.power_off_timeout_seconds)
        off_since = markers.power_off_since(marker, tag, ctx.now(), grace)
        off = await poweroff.power_off_and_hold(ctx, name, grace, off_since, held)
        how: PowerOff | None = off.how
        stopped = markers.stopped_since(marker, tag, off.seen_off_at)
    elif markers.read(held) is not None:  # resumed: already off and held
        rec = markers.PowerOff.parse(markers.read(marker)) or markers.PowerOff("", ctx.now())
        how, off_since = None, rec.requested_at
        stopped = rec.stopped_at if rec.stopped_at is not None else rec.requested_at
    else:
        raise StepError(f"{a.value}: domain {name} not found", retryable=False)
    if files or live:
        moved = live + await wholevm.send(ctx.root, files, transfer=ctx.transfer,
                                          peer=peer, shared=shared, progress=ctx.files,
                                          stall=ctx.checksum_stall)
        checksum, size = wholevm.root_disk(moved).checksum, sum(f.size_bytes for f in moved)
    else:
        sent = await ctx.transfer.send(src=ctx.abs(rel), peer=peer, transfer_id=tid,
                                        progress=ctx.progress)
        checksum, size = sent.checksum, sent.size_bytes
    result = TaskResult(checksum=checksum, size_bytes=size, disks=moved or None,
                        shared_storage=shared if moved else None, power_off=how,
                        downtime_seconds=round(max(0.0, ctx.now() - stopped), 3),
                        power_off_wait_seconds=round(max(0.0, stopped - off_since), 3),
                        stopped_at=as_datetime(stopped),
                        disk_path=rel, powered_off_at=as_datetime(off_since), domain_name=name,
                        power_state=PowerState.SHUTOFF.value)
    to = "within the shared storage" if shared else f"to {peer.name}"
    to += f", {len(live)} of them while the VM ran" if live else ""
    return StepOutcome(result, f"{poweroff.power_off_phrase(how)}sent {len(moved) or 1} "
                               f"file(s) {to}")
