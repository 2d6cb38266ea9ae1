"""Copies an admin abandoned on this host (issue 18, finding 6), against libvirt
test:///default: never started, destroyed with their directory, nothing else touched."""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime

import pytest
from tests.support.agent_steps import BIG, move, names, spawn, spec

from vmresize.agent import orphans
from vmresize.agent.errors import PathEscapeError, StepError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import TaskAction

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def orphan_of(uid: str) -> OrphanCopy:
    _, _, new_dom, new_rel = names(uid)
    return OrphanCopy(host="b", owner="ns/r", owner_uid=uid[::-1], domain_name=new_dom,
                      disk_path=new_rel, disk_dir=posixpath.dirname(new_rel),
                      abandoned_at=NOW)


def fenced_copy(b: Executor, fence: list[OrphanCopy]) -> Executor:
    async def orphaned(name: str) -> str | None:
        return orphans.fenced(fence, name)

    return Executor(host="b", hypervisor=b.hv, storage_root=b.root, transfer=b.transfer,
                    fence=b.fence, orphaned=orphaned)


async def test_an_abandoned_copy_is_never_started(agent_pair: tuple[Executor, Executor],
                                                  agent_uid: str) -> None:
    """The dead destination's Finish is resumed after the admin abandoned it (say its
    owner check passed just before the agent froze): the start is refused."""
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    finish = spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel, flavor=BIG,
                  expected_checksum=checksum, transfer_id=agent_uid)
    fenced = fenced_copy(b, [orphan_of(agent_uid)])
    with pytest.raises(StepError, match=r"refusing to start: domain .* abandoned") as err:
        await fenced.run(finish)
    assert not err.value.retryable
    assert b.hv.state(new_dom) != PowerState.RUNNING
    cleaned = orphan_of(agent_uid).model_copy(update={"cleaned_at": NOW})
    await fenced_copy(b, [cleaned]).run(finish)   # once reaped and cleaned: a name again
    assert b.hv.state(new_dom) == PowerState.RUNNING
    for ex, d, r in ((a, dom, rel), (b, new_dom, new_rel)):
        await ex.run(spec(ex.host, TaskAction.DESTROY, domain_name=d, disk_path=r))


async def test_spawn_and_restore_source_ask_the_fence_too(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    _, b = agent_pair
    dom, rel, _, _ = names(agent_uid)
    o = orphan_of(agent_uid).model_copy(update={"domain_name": dom})
    with pytest.raises(StepError, match="refusing to start"):
        await spawn(fenced_copy(b, [o]), dom, rel)
    assert b.hv.state(dom) != PowerState.RUNNING
    await b.run(spec("b", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_reap_destroys_the_running_copy_and_its_directory(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    await b.run(spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel,
                     flavor=BIG, expected_checksum=checksum, transfer_id=agent_uid))
    assert b.hv.state(new_dom) == PowerState.RUNNING
    o = orphan_of(agent_uid)
    what = await b.reap_orphan(o)
    assert what == f"destroyed and undefined {new_dom}; deleted {o.disk_dir}"
    assert not b.hv.exists(new_dom)
    assert not (b.root / o.disk_dir).exists()
    assert await b.reap_orphan(o) == "nothing left"   # idempotent
    assert (a.root / rel).exists(), "the source is never touched"
    await a.run(spec("a", TaskAction.RESTORE_SOURCE, domain_name=dom, disk_path=rel))
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_a_namesake_on_another_disk_is_left_alone(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    _, b = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(b, dom, rel)   # the VM itself, back on b by a later resize
    o = orphan_of(agent_uid).model_copy(update={"domain_name": dom})
    (b.root / o.disk_dir).mkdir(parents=True)
    (b.root / o.disk_path).write_bytes(b"left over")
    assert await b.reap_orphan(o) == f"deleted {o.disk_dir}"
    assert b.hv.state(dom) == PowerState.RUNNING
    assert (b.root / rel).exists()
    await b.run(spec("b", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


@pytest.mark.parametrize(("disk_dir", "disk_path"), [
    ("instances", "instances/disk.qcow2"),                      # not one placement's
    ("instances/ns/vm/OTHER", "instances/ns/vm/OTHER/disk.qcow2"),
    ("../x/UID", "../x/UID/disk.qcow2"),
    ("instances/ns/vm/UID", "instances/ns/vm/ELSE/disk.qcow2"),  # the disk elsewhere
])
async def test_a_record_can_only_name_one_placement_directory(
        agent_pair: tuple[Executor, Executor], disk_dir: str, disk_path: str) -> None:
    _, b = agent_pair
    (b.root / "instances").mkdir()
    o = OrphanCopy(host="b", owner="ns/r", owner_uid="UID", domain_name="ns.vm",
                   disk_path=disk_path, disk_dir=disk_dir, abandoned_at=NOW)
    with pytest.raises(PathEscapeError):
        await b.reap_orphan(o)
    assert (b.root / "instances").exists()
