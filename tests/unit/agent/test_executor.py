"""Executor steps against libvirt test:///default and qcow2 files in a temp dir.

The disk copy here is a same-process file copy (plumbing only); the real asyncssh
transfer between executors is exercised in tests/integration/agent and tests/e2e.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.agent_steps import BIG, SEED, SMALL, move, names, spawn, spec

from vmresize.agent.errors import CopyChecksumMismatchError, StepError, TaskRefusedError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.protocol import DomainSize, DomainSpec, PowerState
from vmresize.agent.transfer.seam import StepBandwidth
from vmresize.agent.transfer.sparse import disk_checksum
from vmresize.agent.vmfiles import disks
from vmresize.api.hosttask import PeerHost, TaskAction


async def test_spawn_creates_seeded_disk_and_running_domain(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)
    await spawn(a, dom, rel)  # resumed: sees it is done
    assert disks.read_head(a.root, rel, len(SEED)) == SEED.encode()
    assert a.hv.get_size(dom) == DomainSize(vcpus=1, memory_mib=64)
    assert disks.info(a.root, rel).virtual_size == disks.GIB
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))
    assert not a.hv.exists(dom)
    assert not (a.root / rel).exists()


async def test_resize_then_confirm(agent_pair: tuple[Executor, Executor],
                                   agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    progress: list[int] = []
    checksum = await move(a, b, agent_uid, progress)
    assert progress
    assert progress[-1] == (a.root / rel).stat().st_size
    assert disk_checksum(b.root / new_rel) == checksum
    finish = spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel, flavor=BIG,
                  expected_checksum=checksum, transfer_id=agent_uid)
    out = await b.run(finish)
    assert (out.result.vcpus, out.result.memory_mib, out.result.disk_gib) == (2, 128, 2)
    assert b.hv.state(new_dom) == PowerState.RUNNING
    again = await b.run(finish)  # resumed after success: nothing to redo
    assert again.result.disk_gib == 2
    assert disks.read_head(b.root, new_rel, len(SEED)) == SEED.encode()
    await a.run(spec("a", TaskAction.CONFIRM, domain_name=dom, disk_path=rel))
    await a.run(spec("a", TaskAction.CONFIRM, domain_name=dom, disk_path=rel))
    assert not a.hv.exists(dom)
    assert not (a.root / rel).exists()
    assert list(a.root.iterdir()) == []
    assert b.hv.state(new_dom) == PowerState.RUNNING
    await b.run(spec("b", TaskAction.DESTROY, domain_name=new_dom, disk_path=new_rel))


async def test_resize_then_revert_restores_untouched_source(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    await b.run(spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel,
                     flavor=BIG, expected_checksum=checksum, transfer_id=agent_uid))
    await b.run(spec("b", TaskAction.CLEANUP_DEST, domain_name=new_dom, disk_path=new_rel,
                     transfer_id=agent_uid))
    assert not b.hv.exists(new_dom)
    assert list(b.root.iterdir()) == []
    out = await a.run(spec("a", TaskAction.RESTORE_SOURCE, domain_name=dom, disk_path=rel,
                           flavor=SMALL))
    assert out.result.power_state == PowerState.RUNNING.value
    assert a.hv.get_size(dom) == DomainSize(vcpus=1, memory_mib=64)
    assert disk_checksum(a.root / rel) == checksum
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_finish_refuses_a_disk_with_the_wrong_checksum(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    await move(a, b, agent_uid, [])
    with pytest.raises(CopyChecksumMismatchError) as err:
        await b.run(spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel,
                         flavor=BIG, expected_checksum="0" * 64, transfer_id=agent_uid))
    assert not err.value.retryable
    assert not b.hv.exists(new_dom)
    assert disks.info(b.root, new_rel).virtual_size == disks.GIB  # not grown
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_finish_resumes_after_a_crash_between_grow_and_define(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    # What a crash right after growing leaves: the verified marker and a grown disk.
    (b.root / (new_rel + ".verified")).write_text(checksum + "\n")
    disks.grow(b.root, new_rel, BIG.disk_gib)
    out = await b.run(spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel,
                           flavor=BIG, expected_checksum=checksum))
    assert out.result.power_state == PowerState.RUNNING.value
    for ex, d, r in ((a, dom, rel), (b, new_dom, new_rel)):
        await ex.run(spec(ex.host, TaskAction.DESTROY, domain_name=d, disk_path=r))


async def test_migrate_disk_resumed_keeps_the_first_power_off_time(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await move(a, b, agent_uid, [])
    marker = a.root / (rel + ".poweroff")
    first = marker.read_text()
    peer = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")
    out = await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                           peer=peer, transfer_id=agent_uid))
    assert marker.read_text() == first
    assert out.result.power_off is None  # found off and held: how it went off is not known
    assert out.result.checksum == disk_checksum(a.root / rel)
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_migrate_disk_runs_under_the_tasks_bandwidth_limits(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await move(a, b, agent_uid, [])
    net = a.transfer.net  # type: ignore[attr-defined]
    net.bandwidths.clear()
    peer = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")
    await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                     peer=peer, transfer_id=agent_uid, bandwidth_mibps=8,
                     host_bandwidth_mibps=100))
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))
    assert net.bandwidths == [("a", StepBandwidth(limit=8, host=100)), ("a", None)]


async def test_adopt_reports_an_existing_domain(agent_pair: tuple[Executor, Executor],
                                                agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)
    out = await a.run(spec("a", TaskAction.ADOPT, domain_name=dom))
    assert (out.result.disk_path, out.result.vcpus, out.result.disk_gib) == (rel, 1, 1)
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_refuses_a_task_for_another_host(agent_pair: tuple[Executor, Executor],
                                               agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    with pytest.raises(TaskRefusedError):
        await a.run(spec("b", TaskAction.SPAWN, domain_name=dom, disk_path=rel, flavor=SMALL))
    assert not a.hv.exists(dom)


@pytest.mark.parametrize("bad", ["../escape/disk.qcow2", "/etc/disk.qcow2"])
async def test_refuses_paths_outside_the_storage_root(
        agent_pair: tuple[Executor, Executor], agent_uid: str, bad: str,
        tmp_path: Path) -> None:
    a, _ = agent_pair
    dom, _, _, _ = names(agent_uid)
    with pytest.raises(StepError) as err:
        await a.run(spec("a", TaskAction.SPAWN, domain_name=dom, disk_path=bad, flavor=SMALL))
    assert not err.value.retryable
    assert not a.hv.exists(dom)
    assert not (tmp_path / "escape").exists()


async def test_missing_fields_are_refused(agent_pair: tuple[Executor, Executor]) -> None:
    a, _ = agent_pair
    with pytest.raises(TaskRefusedError, match="expectedChecksum"):
        await a.run(spec("a", TaskAction.FINISH, domain_name="x", disk_path="d/disk.qcow2",
                         flavor=BIG))


async def test_spawn_from_a_base_image_copies_and_grows_it(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    disks.create_blank(a.root, "images/base.qcow2", 1, seed="base image")
    out = await a.run(spec("a", TaskAction.SPAWN, domain_name=dom, disk_path=rel, flavor=BIG,
                           base_image="base.qcow2"))
    assert out.result.disk_gib == 2
    assert disks.read_head(a.root, rel, 10) == b"base image"
    assert disks.info(a.root, "images/base.qcow2").virtual_size == disks.GIB  # untouched
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_adopt_refuses_a_disk_outside_the_storage_root(
        agent_pair: tuple[Executor, Executor], agent_uid: str, tmp_path: Path) -> None:
    a, _ = agent_pair
    dom = f"adopt-{agent_uid[:8]}"
    a.hv.define(DomainSpec(name=dom, vcpus=1, memory_mib=64, disk=tmp_path / "elsewhere.qcow2"))
    try:
        with pytest.raises(TaskRefusedError, match="outside the storage root"):
            await a.run(spec("a", TaskAction.ADOPT, domain_name=dom))
    finally:
        a.hv.undefine(dom)
