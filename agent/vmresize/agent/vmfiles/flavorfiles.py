"""A flavor's disks on this host: what :func:`vmresize.api.flavordisks.plan` decides, done.

* :func:`make` grows the root and ephemeral disks (``disks.grow`` never shrinks) and makes
  the new ones: a fresh swap (its content is never copied), a new ephemeral or swap disk.
  Each is built under a temporary name and renamed into place, so a resumed step redoes
  only what is missing (blocking: run it in a thread).
* :func:`devices` gives the ``<disk>`` elements of the disks a definition gains.
* :func:`spawn` does both for a new instance whose root disk exists.
"""

from __future__ import annotations

from pathlib import Path

from vmresize.agent.hypervisor.domainxml import NewDisk
from vmresize.agent.paths import confine
from vmresize.agent.vmfiles import disks
from vmresize.api import flavordisks
from vmresize.api.flavordisks import Plan, Sizes
from vmresize.api.vmdisks import DiskUse, VMDisk

ROOT_TARGET = "vda"


def make(root: Path, plan: Plan) -> None:
    """Grow what grows, create what is created (idempotent)."""
    for g in plan.grow:
        disks.grow(root, g.disk.path, -(-g.size_bytes // disks.GIB), g.disk.format)
    for c in plan.create:
        if c.disk.use is DiskUse.SWAP:
            disks.create_swap(root, c.disk.path, c.size_bytes)
        else:
            disks.create_empty(root, c.disk.path, c.disk.format, c.size_bytes)


def devices(root: Path, plan: Plan) -> tuple[NewDisk, ...]:
    """The disks the definition gains, with their serials (how they are known later)."""
    return tuple(NewDisk(path=str(confine(root, d.path)), format=d.format,
                         target=d.target or "",
                         serial=flavordisks.SERIALS.get(d.use) if d.use else None)
                 for d in plan.added)


def spawn(root: Path, rel: str, sizes: Sizes) -> tuple[list[VMDisk], tuple[NewDisk, ...]]:
    """A new instance (its qcow2 root disk ``rel`` made): its ephemeral and swap disks.
    Returns every file of the VM (sizes filled in) and the disks to define besides the
    root (blocking)."""
    plan = flavordisks.plan([VMDisk(path=rel, format="qcow2", target=ROOT_TARGET)], sizes)
    make(root, plan)
    files = [f.model_copy(update={"size_bytes": confine(root, f.path).stat().st_size})
             for f in plan.files]
    return files, devices(root, plan)
