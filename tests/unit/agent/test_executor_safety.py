"""Executor safety (issue 9): fencing, trusting no existing domain, the held source,
the tagged power-off marker, rounding of adopted sizes, bounded hypervisor calls.

libvirt ``test:///default`` and qcow2 files in a temp dir, as in test_executor.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest
from tests.support.agent_steps import BIG, SMALL, move, names, spawn, spec

from vmresize.agent.errors import (
    CopyChecksumMismatchError,
    DomainNotFoundError,
    FencedError,
    StepError,
    TaskRefusedError,
)
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import DomainSpec, PowerState
from vmresize.agent.transfer.sparse import disk_checksum
from vmresize.agent.vmfiles import disks
from vmresize.api.hosttask import HostTaskSpec, PeerHost, TaskAction

PEER = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")


class Owner:
    """A fence over an in-memory owner status: proceed only for ``current``."""

    def __init__(self, current: str) -> None:
        self.current = current
        self.asked: list[tuple[TaskAction, str]] = []

    async def __call__(self, spec: HostTaskSpec, task_name: str) -> str | None:
        self.asked.append((spec.action, task_name))
        return None if task_name == self.current else f"the owner names {self.current!r}"


async def destroy_all(*pairs: tuple[Executor, str, str]) -> None:
    for ex, dom, rel in pairs:
        ex.fence = Owner("cleanup")
        await ex.run(spec(ex.host, TaskAction.DESTROY, domain_name=dom, disk_path=rel),
                     task_name="cleanup")


@pytest.mark.parametrize("action", [TaskAction.CONFIRM, TaskAction.DESTROY,
                                    TaskAction.CLEANUP_DEST])
async def test_a_destructive_step_the_owner_no_longer_names_is_fenced(
        agent_pair: tuple[Executor, Executor], agent_uid: str, action: TaskAction) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)
    a.fence = Owner("uid-revert-0")  # the owner moved on to another task
    with pytest.raises(FencedError, match="fenced: the owner no longer asks") as err:
        await a.run(spec("a", action, domain_name=dom, disk_path=rel),
                    task_name="uid-confirm-0")
    assert not err.value.retryable
    assert a.hv.state(dom) == PowerState.RUNNING
    assert (a.root / rel).is_file()
    await destroy_all((a, dom, rel))


async def test_migrate_disk_checks_the_fence_right_before_the_power_off(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, _, new_rel = names(agent_uid)
    await spawn(a, dom, rel)
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=agent_uid,
                     expected_bytes=disks.GIB))
    owner = Owner("uid-cleanupdest-0")
    a.fence = owner
    with pytest.raises(FencedError):
        await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                         peer=PEER, transfer_id=agent_uid), task_name="uid-migratedisk-0")
    assert owner.asked == [(TaskAction.MIGRATE_DISK, "uid-migratedisk-0")]
    assert a.hv.state(dom) == PowerState.RUNNING  # never powered off
    assert not (b.root / new_rel).exists()
    owner.current = "uid-migratedisk-0"
    out = await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                           peer=PEER, transfer_id=agent_uid), task_name="uid-migratedisk-0")
    assert out.result.checksum == disk_checksum(b.root / new_rel)
    await destroy_all((a, dom, rel), (b, "unused", new_rel))


async def test_finish_never_starts_an_existing_domain_without_the_verified_disk(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    # A domain of the expected name already exists, pointing at some other disk.
    other = "instances/ns/other/disk.qcow2"
    disks.create_blank(b.root, other, 1, seed="not the source")
    b.hv.define(DomainSpec(name=new_dom, vcpus=1, memory_mib=64, disk=b.root / other))
    finish = spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel, flavor=BIG,
                  expected_checksum="0" * 64, transfer_id=agent_uid)
    with pytest.raises(CopyChecksumMismatchError):  # the checksum is checked although it exists
        await b.run(finish)
    assert b.hv.state(new_dom) == PowerState.SHUTOFF
    assert disks.info(b.root, new_rel).virtual_size == disks.GIB  # not grown
    out = await b.run(finish.model_copy(update={"expected_checksum": checksum}))
    assert out.result.power_state == PowerState.RUNNING.value
    assert b.hv.disk_path(new_dom) == (b.root / new_rel).resolve()  # redefined on ours
    assert out.result.disk_gib == BIG.disk_gib  # and grown
    await destroy_all((a, dom, rel), (b, new_dom, new_rel))


async def test_spawn_refuses_a_running_domain_of_that_name_on_another_disk(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    other = "instances/ns/someone-else/disk.qcow2"
    await spawn(a, dom, other)
    with pytest.raises(TaskRefusedError, match="already runs from"):
        await a.run(spec("a", TaskAction.SPAWN, domain_name=dom, disk_path=rel, flavor=SMALL))
    assert a.hv.disk_path(dom) == (a.root / other).resolve()
    await destroy_all((a, dom, other), (a, "unused", rel))


async def test_held_source_cannot_start_and_revert_restores_its_exact_definition(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    await spawn(a, dom, rel)
    before = a.hv.definition(dom)
    checksum = await move(a, b, agent_uid, [])
    with pytest.raises(DomainNotFoundError):  # `virsh start` finds nothing to start
        a.hv.start(dom)
    await b.run(spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel,
                     flavor=BIG, expected_checksum=checksum, transfer_id=agent_uid))
    await b.run(spec("b", TaskAction.CLEANUP_DEST, domain_name=new_dom, disk_path=new_rel,
                     transfer_id=agent_uid), task_name="t")
    out = await a.run(spec("a", TaskAction.RESTORE_SOURCE, domain_name=dom, disk_path=rel,
                           flavor=SMALL))
    assert out.result.power_state == PowerState.RUNNING.value
    assert a.hv.definition(dom) == before  # UUID, devices, everything
    assert disk_checksum(a.root / rel) == checksum
    assert not (a.root / (rel + ".held.xml")).exists()
    await destroy_all((a, dom, rel))


async def test_confirm_refuses_while_the_source_runs_again(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    await b.run(spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel,
                     flavor=BIG, expected_checksum=checksum, transfer_id=agent_uid))
    # Someone brings the held source back by hand and starts it: both copies run.
    a.hv.define_xml((a.root / (rel + ".held.xml")).read_text())
    a.hv.start(dom)
    with pytest.raises(StepError, match="both copies run") as err:
        await a.run(spec("a", TaskAction.CONFIRM, domain_name=dom, disk_path=rel))
    assert not err.value.retryable
    assert a.hv.state(dom) == PowerState.RUNNING
    assert (a.root / rel).is_file()
    await destroy_all((a, dom, rel), (b, new_dom, new_rel))


async def test_a_stale_power_off_marker_of_an_earlier_resize_is_ignored(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, _, new_rel = names(agent_uid)
    await spawn(a, dom, rel)
    # Left by an earlier resize an hour ago (untagged, as the old agent wrote it).
    (a.root / (rel + ".poweroff")).write_text(f"{time.time() - 3600:.6f}\n")
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=agent_uid,
                     expected_bytes=disks.GIB))
    out = await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                           peer=PEER, transfer_id=agent_uid, owner_uid="r-uid"))
    assert out.result.downtime_seconds is not None
    assert out.result.downtime_seconds < 600  # counted from this resize's power-off
    assert (a.root / (rel + ".poweroff")).read_text().startswith(f"r-uid/{agent_uid} ")
    await destroy_all((a, dom, rel), (b, "unused", new_rel))


async def test_adopt_rounds_a_partial_gib_up(agent_pair: tuple[Executor, Executor],
                                             agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    path = a.root / rel
    path.parent.mkdir(parents=True)
    await asyncio.to_thread(subprocess.run, ["qemu-img", "create", "-q", "-f", "qcow2",
                                             str(path), str(3 * disks.GIB // 2)], check=True)
    a.hv.define(DomainSpec(name=dom, vcpus=1, memory_mib=64, disk=path))
    out = await a.run(spec("a", TaskAction.ADOPT, domain_name=dom))
    assert out.result.disk_gib == 2  # 1.5 GiB needs 2 GiB on any destination
    await destroy_all((a, dom, rel))


class StuckShutdown:
    """The real libvirt hypervisor, except that ``shutdown`` hangs (a wedged libvirtd)."""

    def __init__(self, hv: LibvirtHypervisor) -> None:
        self._hv = hv
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._hv, name)

    def shutdown(self, name: str) -> None:
        self.release.wait(30)


async def test_a_hung_hypervisor_call_ends_the_step(
        agent_pair: tuple[Executor, Executor], agent_uid: str,
        agent_hv: LibvirtHypervisor) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)
    stuck = StuckShutdown(agent_hv)
    hung = Executor(host="a", hypervisor=stuck, storage_root=a.root,  # type: ignore[arg-type]
                    transfer=a.transfer, fence=a.fence, call_timeout=0.5)
    try:
        with pytest.raises(StepError, match="did not answer") as err:
            await asyncio.wait_for(hung.run(spec(
                "a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel, peer=PEER,
                transfer_id=agent_uid)), timeout=10)
        assert err.value.retryable
    finally:
        stuck.release.set()
    await destroy_all((a, dom, rel))


async def test_a_finish_its_owner_gave_up_on_never_starts_a_second_copy(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    # Its agent was frozen while the operator's step watchdog rolled the resize back.
    a, b = agent_pair
    _, _, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    b.fence = Owner("uid-cleanupdest-0")
    finish = spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel, flavor=BIG,
                  expected_checksum=checksum, transfer_id=agent_uid)
    with pytest.raises(FencedError):
        await b.run(finish, task_name="uid-finish-0")
    assert b.hv.state(new_dom) != PowerState.RUNNING
