"""Which domains a step may destroy, undefine or redefine: those its Instance owns.

Every domain vmresize defines (Spawn, Finish) or takes over (Adopt) records the UID of
its Instance in an ``<owner uid=…/>`` element of its persistent ``<metadata>`` (namespace
:data:`vmresize.agent.hypervisor.libvirt_adapter.OWNER_XMLNS`); a held source's saved
definition keeps it, and a resized copy is defined from the source's own definition and
then stamped again. Domain names (``<namespace>.<instance>``) are not unique across the
host's other users, so a name alone never licenses a destructive act (issue 18,
finding 5; DESIGN invariant 12): a domain that records another UID belongs to another
Instance, and one that records none was not made by vmresize.

What "owned" means, step by step:

* CleanupDest, and Finish or Spawn meeting a shut-off namesake on another disk: the
  domain must record this Instance's UID. These act on a name the Instance never held on
  that host, so an unowned domain there is somebody else's and is refused.
* MigrateDisk (the source, after the fence and before the power-off), RestoreSource,
  Confirm and Destroy act on the domain the Instance's status has named since its Spawn or
  Adopt, on the Instance's own host. A domain made by an agent from before owners were
  recorded carries none: it is taken as this Instance's and stamped, instead of leaving a
  VM off or undeletable after an upgrade. Another UID is refused there too.
* An adopted domain records the adopting Instance's UID from its Adopt on; that is the
  UID every later step checks.

A task with no ``instanceUid`` (an older operator's) is checked by name only, as before.
"""

from __future__ import annotations

from vmresize.agent.errors import TaskRefusedError
from vmresize.agent.hypervisor.timed import TimedHypervisor
from vmresize.api.hosttask import HostTaskSpec


async def check(hv: TimedHypervisor, spec: HostTaskSpec, name: str, act: str,
                *, stamp_unowned: bool = False) -> None:
    """Proceed only if the domain ``name`` records ``spec.instanceUid`` as its owner, else
    :class:`TaskRefusedError` (permanent: nothing was done). ``stamp_unowned``: a domain that
    records no owner is this Instance's (the source at MigrateDisk) and gets its UID."""
    uid = spec.instance_uid
    if not uid:
        return
    owner = await hv.owner(name)
    if owner == uid:
        return
    if owner is None and stamp_unowned:
        await hv.set_owner(name, uid)
        return
    whose = ("records no vmresize owner, so vmresize did not make it" if owner is None
             else f"belongs to the Instance with UID {owner}")
    raise TaskRefusedError(f"refusing to {act} domain {name}: it {whose}, not to {spec.instance} "
                      f"(UID {uid}); nothing was done to it", retryable=False)


async def stamp(hv: TimedHypervisor, spec: HostTaskSpec, name: str) -> None:
    """Record ``spec.instanceUid`` as the owner of the domain ``name`` vmresize just defined."""
    if spec.instance_uid and await hv.owner(name) != spec.instance_uid:
        await hv.set_owner(name, spec.instance_uid)
