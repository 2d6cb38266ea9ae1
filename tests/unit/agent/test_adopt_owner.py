"""The Adopt step records its Instance in the domain, refuses a second owner, and refuses
to list a data disk that carries vmresize's reserved swap serial.

libvirt ``test:///default`` and a qcow2 file under a temp storage root: the ownership lives
in the domain's persistent ``<metadata>``, so it is read back through real libvirt.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.agent_steps import allow_all

from vmresize.agent.executor import Executor, TaskRefusedError
from vmresize.agent.hypervisor.domainxml import NewDisk
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import DomainSpec
from vmresize.agent.transfer.seam import ProgressFn, Received, Sent, StepBandwidth
from vmresize.agent.vmfiles import disks
from vmresize.api.hosttask import HostTaskSpec, PeerHost, TaskAction


class NoTransfer:
    """Adopt moves no disk; any use of the transfer seam is a bug here."""

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int, *,
               promised: int | None = None) -> None:
        raise AssertionError("Adopt must not expect a transfer")

    def received(self, transfer_id: str) -> Received | None:
        raise AssertionError("Adopt must not look at transfers")

    def forget(self, transfer_id: str) -> None:
        raise AssertionError("Adopt must not forget transfers")

    def step(self, bandwidth: StepBandwidth | None = None
             ) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        raise AssertionError("Adopt must not send")


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[Executor]:
    hv = LibvirtHypervisor("test:///default")
    root = tmp_path / "root"
    root.mkdir()
    yield Executor(host="a", hypervisor=hv, storage_root=root, transfer=NoTransfer(),
                   fence=allow_all)
    hv.close()


@pytest.fixture
def legacy(executor: Executor) -> Iterator[str]:
    """A domain defined outside vmresize, its disk under the storage root."""
    name = f"legacy-{uuid.uuid4().hex[:8]}"
    rel = f"legacy/{name}/disk.qcow2"
    disks.create_blank(executor.root, rel, 1)
    executor.hv.define(DomainSpec(name=name, vcpus=1, memory_mib=64,
                                  disk=executor.root / rel))
    yield name
    executor.hv.undefine(name)


def adopt(name: str, owner_uid: str) -> HostTaskSpec:
    return HostTaskSpec(host="a", action=TaskAction.ADOPT, owner="ns/web",
                        owner_uid=owner_uid, instance="ns/web", domain_name=name)


async def test_adopt_records_the_owner_in_the_domain(executor: Executor, legacy: str) -> None:
    uid = str(uuid.uuid4())
    assert executor.hv.owner(legacy) is None
    out = await executor.run(adopt(legacy, uid))
    assert out.result.domain_name == legacy
    assert executor.hv.owner(legacy) == uid


async def test_adopt_again_by_the_same_owner_resumes(executor: Executor, legacy: str) -> None:
    uid = str(uuid.uuid4())
    await executor.run(adopt(legacy, uid))
    out = await executor.run(adopt(legacy, uid))  # e.g. the agent restarted mid-step
    assert out.message == f"adopted {legacy}"
    assert executor.hv.owner(legacy) == uid


async def test_adopt_of_a_domain_another_instance_owns_is_refused(
        executor: Executor, legacy: str) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    await executor.run(adopt(legacy, first))
    with pytest.raises(TaskRefusedError, match=f"owned by the Instance with UID {first}") as err:
        await executor.run(adopt(legacy, second))
    assert not err.value.retryable
    assert executor.hv.owner(legacy) == first  # the refusal changed nothing


async def test_owner_survives_a_running_domain(executor: Executor, legacy: str) -> None:
    """Recorded live and in the persistent definition: a redefinition-free restart keeps it."""
    executor.hv.start(legacy)
    try:
        uid = str(uuid.uuid4())
        await executor.run(adopt(legacy, uid))
        executor.hv.destroy(legacy)
        assert executor.hv.owner(legacy) == uid
    finally:
        executor.hv.destroy(legacy)


async def test_adopt_refuses_to_move_a_data_disk_with_the_swap_serial(
        executor: Executor) -> None:
    """A swap disk is never sent; a disk defined outside vmresize that happens to carry the
    serial vmresize gives its swap disks would arrive empty. Adopt says so instead."""
    name = f"legacy-{uuid.uuid4().hex[:8]}"
    rel, data = f"legacy/{name}/disk.qcow2", f"legacy/{name}/data.qcow2"
    disks.create_blank(executor.root, rel, 1)
    disks.create_blank(executor.root, data, 1)
    executor.hv.define(DomainSpec(name=name, vcpus=1, memory_mib=64, disk=executor.root / rel,
                                  extra_disks=(NewDisk(str(executor.root / data), "qcow2",
                                                       "vdb", "vmresize-swap"),)))
    try:
        out = await executor.run(adopt(name, str(uuid.uuid4())))
        assert out.result.disks is None
        assert out.result.unmovable
        assert "vmresize-swap" in out.result.unmovable[0]
        assert data in out.result.unmovable[0]
    finally:
        executor.hv.undefine(name)
