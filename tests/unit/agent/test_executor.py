"""Executor steps against libvirt test:///default and qcow2 files in a temp dir.

The disk copy here is a same-process file copy (plumbing only); the real asyncssh
transfer between executors is exercised in tests/integration/agent and tests/e2e.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmresize.agent import disks
from vmresize.agent.errors import CopyChecksumMismatch, StepError, TaskRefused
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import DomainSize, DomainSpec, PowerState
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import ProgressFn, Received, Sent
from vmresize.agent.transfer.sparse import sha256_file
from vmresize.api import naming
from vmresize.api.hosttask import HostTaskSpec, PeerHost, TaskAction, TaskFlavor


class LocalNetwork:
    """A same-process stand-in for the SSH transfer (plumbing only; the real one is
    tested in tests/integration/agent against asyncssh)."""

    def __init__(self) -> None:
        self.roots: dict[str, Path] = {}
        self.expected: dict[str, dict[str, str]] = {}

    def endpoint(self, host: str, root: Path) -> LocalTransfer:
        self.roots[host] = root
        self.expected[host] = {}
        return LocalTransfer(self, host)


class LocalTransfer:
    def __init__(self, net: LocalNetwork, host: str) -> None:
        self.net, self.host = net, host

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int) -> None:
        self.net.expected[self.host][transfer_id] = rel_path

    def received(self, transfer_id: str) -> Received | None:
        rel = self.net.expected[self.host].get(transfer_id)
        if rel is None:
            return None
        path = confine(self.net.roots[self.host], rel)
        return Received(complete=path.exists(), sha256=None)

    def forget(self, transfer_id: str) -> None:
        self.net.expected[self.host].pop(transfer_id, None)

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        rel = self.net.expected[peer.name][transfer_id]
        dst = confine(self.net.roots[peer.name], rel)
        shutil.copyfile(src, dst)
        size = src.stat().st_size  # noqa: ASYNC240 - a tiny local file in a test fake
        if progress is not None:
            progress(size, size, 0.0)
        return Sent(checksum=sha256_file(dst), size_bytes=size)


@pytest.fixture(scope="session")
def agent_hv() -> Iterator[LibvirtHypervisor]:
    hv = LibvirtHypervisor("test:///default")
    yield hv
    hv.close()


@pytest.fixture
def agent_pair(agent_hv: LibvirtHypervisor, tmp_path: Path) -> tuple[Executor, Executor]:
    """Executors of hosts ``a`` and ``b`` sharing one test driver, each its own root."""
    net = LocalNetwork()
    out = []
    for host in ("a", "b"):
        root = tmp_path / host
        root.mkdir()
        out.append(Executor(host=host, hypervisor=agent_hv, storage_root=root,
                            transfer=net.endpoint(host, root.resolve())))
    return out[0], out[1]


@pytest.fixture
def agent_uid() -> str:
    return uuid.uuid4().hex


SMALL = TaskFlavor(vcpus=1, memory_mib=64, disk_gib=1)
BIG = TaskFlavor(vcpus=2, memory_mib=128, disk_gib=2)
SEED = "vmresize seed: hello from the source"


def spec(host: str, action: TaskAction, **kw: object) -> HostTaskSpec:
    return HostTaskSpec.model_validate({"host": host, "action": action, "owner": "ns/r",
                                        "instance": "ns/vm", **kw})


def names(uid: str) -> tuple[str, str, str, str]:
    return (naming.domain_name("ns", f"vm{uid[:6]}"),
            naming.disk_path("ns", f"vm{uid[:6]}", uid),
            naming.domain_name("ns", f"vm{uid[:6]}", "resize"),
            naming.disk_path("ns", f"vm{uid[:6]}", uid[::-1]))


async def spawn(ex: Executor, dom: str, rel: str) -> None:
    out = await ex.run(spec(ex.host, TaskAction.SPAWN, domain_name=dom, disk_path=rel,
                            flavor=SMALL, seed_pattern=SEED))
    assert out.result.power_state == PowerState.RUNNING.value


async def move(a: Executor, b: Executor, uid: str, progress: list[int]) -> str:
    """Spawn on a, prepare on b, migrate a→b; return the source checksum."""
    dom, rel, _, new_rel = names(uid)
    await spawn(a, dom, rel)
    size = (a.root / rel).stat().st_size
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=uid,
                     expected_bytes=size))
    peer = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")
    out = await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                           peer=peer, transfer_id=uid, power_off_timeout_seconds=1),
                      progress=lambda done, total, rate: progress.append(done))
    assert a.hv.state(dom) == PowerState.SHUTOFF
    assert out.result.checksum == sha256_file(a.root / rel)
    assert out.result.downtime_seconds is not None
    assert out.result.downtime_seconds >= 0
    return out.result.checksum


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
    assert sha256_file(b.root / new_rel) == checksum
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
    assert sha256_file(a.root / rel) == checksum
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_finish_refuses_a_disk_with_the_wrong_checksum(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    await move(a, b, agent_uid, [])
    with pytest.raises(CopyChecksumMismatch) as err:
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
    assert not (b.root / (new_rel + ".verified")).exists()
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
    assert out.result.checksum == sha256_file(a.root / rel)
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


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
    with pytest.raises(TaskRefused):
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
    with pytest.raises(TaskRefused, match="expectedChecksum"):
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
        with pytest.raises(TaskRefused, match="outside the storage root"):
            await a.run(spec("a", TaskAction.ADOPT, domain_name=dom))
    finally:
        a.hv.undefine(dom)
