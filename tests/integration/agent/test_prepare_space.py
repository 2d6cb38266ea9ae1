"""Prepare's space check for a whole VM counts all that will land on the destination.

Not only the files sent, but the pre-copy overlays (a reserve: what the guest writes during
the live copy is unknown at Prepare) and the disks the new flavor makes (a swap disk at its
full size, a new ephemeral qcow2 at its metadata). A destination that would fill is refused
in Prepare, before anything is accepted, so the operator moves on to the next alternate.

Real Executor, real migration server on 127.0.0.1, and a real 64 MiB tmpfs as the
filesystem the instance directory lands on (the tests run as root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack import children
from tests.support.agent_steps import allow_all

from vmresize.agent.errors import InsufficientSpaceError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.transfer.server import MigrationServer
from vmresize.agent.transfer.service import SshTransfer
from vmresize.api import vmdisks
from vmresize.api.hosttask import HostTaskSpec, TaskAction, TaskFlavor
from vmresize.api.vmdisks import VMDisk

from .conftest import MiB, XferKeys

pytestmark = pytest.mark.asyncio(loop_scope="session")

GiB = 1024 * MiB
FS_MIB = 64
# An 8 MiB qcow2 root disk: sent, it is bounded by 8 MiB x 1.02 + 16 MiB of metadata slack
# (about 24 MiB), plus 1 MiB for the definition: about 25 MiB, well inside the 64 MiB.
SOURCE = [VMDisk(path="instances/ns/vm/src/disk.qcow2", format="qcow2", target="vda",
                 size_bytes=8 * MiB)]


def _tmpfs(xfer_root: Path, mib: int) -> Iterator[Path]:
    """``<root>/instances`` as a tmpfs of ``mib``: where the VM lands, a filesystem of its
    own."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = xfer_root / "instances"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(mnt)],
                   check=True)
    unmount = children.on_stop(f"tmpfs {mnt}", lambda: subprocess.run(
        ["umount", "-l", str(mnt)], check=False))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        children.done(unmount)


@pytest.fixture
def small_fs(xfer_root: Path) -> Iterator[Path]:
    yield from _tmpfs(xfer_root, FS_MIB)


@pytest.fixture
def two_moves_fs(xfer_root: Path) -> Iterator[Path]:
    """Room for two pre-copy moves of SOURCE (about 89 MiB each, a 64 MiB overlay reserve
    included), not three; nor for one beside an overlay counted at its 1 GiB bound."""
    yield from _tmpfs(xfer_root, 192)


@pytest.fixture
def ex(xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_root: Path
       ) -> Iterator[Executor]:
    """The destination's executor: test driver, the real migration server."""
    hv = LibvirtHypervisor("test:///default")
    yield Executor(host="b", hypervisor=hv, storage_root=xfer_root, fence=allow_all,
                   transfer=SshTransfer(xfer_server, xfer_keys.client))
    hv.close()


def prepare(tid: str, *, pre_copy: bool = False, disk_gib: int = 1, ephemeral_gib: int = 0,
            swap_mib: int = 0) -> HostTaskSpec:
    """A Prepare as the operator builds it (``vmdisks.destination``, then ``arrived``)."""
    moved = vmdisks.destination(SOURCE, f"instances/ns/vm/{tid}", tid, pre_copy=pre_copy,
                                virtual_bytes=disk_gib * GiB)
    return HostTaskSpec(host="b", action=TaskAction.PREPARE, owner="ns/r", instance="ns/vm",
                        transfer_id=tid, disks=vmdisks.arrived(moved),
                        flavor=TaskFlavor(vcpus=1, memory_mib=64, disk_gib=disk_gib,
                                          ephemeral_gib=ephemeral_gib, swap_mib=swap_mib))


async def test_prepare_counts_overlays_and_the_new_flavor_disks(
        small_fs: Path, xfer_server: MigrationServer, ex: Executor) -> None:
    # Pre-copy: the root disk's overlay is reserved 2 x 32 MiB (its floor; twice, as
    # Finish commits it into the disk below): 25 + 64 MiB do not fit in 64 MiB.
    spec = prepare("t-pre", pre_copy=True)
    with pytest.raises(InsufficientSpaceError, match=r"67108864 reserved for pre-copy overlays"):
        await ex.run(spec)
    # A flavor that adds a 48 MiB swap disk (raw, counted in full): 25 + 48 MiB.
    swap = prepare("t-swap", swap_mib=48)
    with pytest.raises(InsufficientSpaceError,
                       match=r"50331648 for the disks the new flavor makes"):
        await ex.run(swap)
    for refused in (spec, swap):   # nothing was accepted, so nothing is promised
        assert [f.path for f in refused.disks
                if xfer_server.status(f.transfer_id or "") is not None] == []
    assert xfer_server.pending_bytes(small_fs) == 0
    # Growth is lazy: a 1 GiB ephemeral qcow2 (16 MiB of metadata) and the root disk
    # growing to 10 GiB fit, as does the same VM moved offline.
    out = await ex.run(prepare("t-grow", disk_gib=10, ephemeral_gib=1))
    assert out.result.size_bytes is not None
    assert 40 * MiB < out.result.size_bytes < 45 * MiB
    for f in prepare("t-grow").disks:
        xfer_server.forget(f.transfer_id or "")
    assert (await ex.run(prepare("t-off"))).result.size_bytes is not None


async def test_an_accepted_overlay_is_promised_at_its_reserve_not_its_bound(
        two_moves_fs: Path, xfer_server: MigrationServer, ex: Executor,
        xfer_root: Path) -> None:
    first = await ex.run(prepare("t-a", pre_copy=True))
    need = first.result.size_bytes or 0
    # What the transfers still promise is what Prepare counted for them: the 1 GiB
    # overlay (its bound) at its 64 MiB reserve.
    assert 85 * MiB < need < 95 * MiB
    assert xfer_server.pending_bytes(two_moves_fs) == need
    await ex.run(prepare("t-a", pre_copy=True))  # a resumed Prepare promises nothing twice
    assert xfer_server.pending_bytes(two_moves_fs) == need
    await ex.run(prepare("t-b", pre_copy=True))  # another move fits beside it
    assert xfer_server.pending_bytes(two_moves_fs) == 2 * need
    with pytest.raises(InsufficientSpaceError, match=rf"{2 * need} of them promised"):
        await ex.run(prepare("t-c", pre_copy=True))  # a third does not
    # The promise is in the sidecars: an agent restarted counts the same.
    again = MigrationServer(xfer_root)
    assert again.recover() == 2 * len(prepare("t-a", pre_copy=True).disks)
    assert again.pending_bytes(two_moves_fs) == 2 * need
    # A sidecar of an older agent, without the promise, counts the bound as before.
    ov = next(f for f in prepare("t-a", pre_copy=True).disks if f.transfer_id
              and f.transfer_id.endswith("-ov"))
    sidecar = xfer_root / (ov.path + ".xfer")
    doc = json.loads(sidecar.read_text())
    del doc["promised"]
    sidecar.write_text(json.dumps(doc))
    old = MigrationServer(xfer_root)
    old.recover()
    assert old.pending_bytes(two_moves_fs) > need + GiB
