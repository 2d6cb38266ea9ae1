"""Issue 18, finding 5: destructive steps act on a domain only if its Instance owns it.

A domain's owner is the ``<owner uid=…/>`` in its persistent ``<metadata>``
(:mod:`vmresize.agent.ownership`), read back through real libvirt ``test:///default``.
Each test puts a namesake where a step will act by name: unmanaged (no owner) or another
Instance's; the step is refused and the namesake keeps running (or stays defined).
"""

from __future__ import annotations

import uuid

import pytest
from tests.support.agent_steps import BIG, SMALL, move, names, spawn, spec

from vmresize.agent.errors import TaskRefusedError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import DomainSpec, PowerState
from vmresize.agent.main import _stop_vms
from vmresize.agent.vmfiles import disks
from vmresize.api.hosttask import PeerHost, TaskAction

PEER = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")


def namesake(ex: Executor, name: str, owner: str | None, *, start: bool = True) -> str:
    """A domain ``name`` on a disk of its own; ``owner``: the UID it records, if any."""
    rel = f"elsewhere/{uuid.uuid4().hex[:8]}/disk.qcow2"
    disks.create_blank(ex.root, rel, 1, seed="someone else's data")
    ex.hv.define(DomainSpec(name=name, vcpus=1, memory_mib=64, disk=ex.root / rel))
    if owner is not None:
        ex.hv.set_owner(name, owner)
    if start:
        ex.hv.start(name)
    return rel


def remove(ex: Executor, name: str) -> None:
    if ex.hv.exists(name):
        ex.hv.destroy(name)
        ex.hv.undefine(name)


async def test_spawn_records_its_instance_as_the_owner(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await a.run(spec("a", TaskAction.SPAWN, domain_name=dom, disk_path=rel, flavor=SMALL,
                     instance_uid=agent_uid))
    try:
        assert a.hv.owner(dom) == agent_uid
    finally:
        remove(a, dom)


@pytest.mark.parametrize("owner", [None, "another-instance"])
async def test_cleanup_dest_leaves_a_namesake_it_does_not_own_running(
        agent_pair: tuple[Executor, Executor], agent_uid: str, owner: str | None) -> None:
    _, b = agent_pair
    _, _, new_dom, new_rel = names(agent_uid)
    other = namesake(b, new_dom, owner)
    cleanup = spec("b", TaskAction.CLEANUP_DEST, domain_name=new_dom, disk_path=new_rel,
                   instance_uid=agent_uid)
    try:
        with pytest.raises(TaskRefusedError,
                           match=f"refusing to CleanupDest domain {new_dom}") as e:
            await b.run(cleanup)
        assert not e.value.retryable
        assert b.hv.state(new_dom) == PowerState.RUNNING
        assert (b.root / other).is_file()
    finally:
        remove(b, new_dom)


async def test_cleanup_dest_deletes_its_own_copy(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    _, b = agent_pair
    _, _, new_dom, new_rel = names(agent_uid)
    namesake(b, new_dom, agent_uid)
    await b.run(spec("b", TaskAction.CLEANUP_DEST, domain_name=new_dom, disk_path=new_rel,
                     instance_uid=agent_uid))
    assert not b.hv.exists(new_dom)


@pytest.mark.parametrize("action", [TaskAction.CONFIRM, TaskAction.DESTROY])
async def test_confirm_and_destroy_refuse_another_instances_domain(
        agent_pair: tuple[Executor, Executor], agent_uid: str, action: TaskAction) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    namesake(a, dom, "another-instance", start=False)
    try:
        with pytest.raises(TaskRefusedError, match="belongs to the Instance with UID another"):
            await a.run(spec("a", action, domain_name=dom, disk_path=rel,
                             instance_uid=agent_uid))
        assert a.hv.exists(dom)
    finally:
        remove(a, dom)


async def test_destroy_takes_an_unowned_domain_of_its_instance_as_its_own(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    """A domain spawned before owners were recorded: the Instance's status names it."""
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)   # a task without instanceUid: no owner recorded
    assert a.hv.owner(dom) is None
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel,
                     instance_uid=agent_uid))
    assert not a.hv.exists(dom)


async def test_finish_never_redefines_a_shut_off_namesake_it_does_not_own(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    _, rel, new_dom, new_rel = names(agent_uid)
    checksum = await move(a, b, agent_uid, [])
    other = namesake(b, new_dom, None, start=False)
    finish = spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel, flavor=BIG,
                  expected_checksum=checksum, transfer_id=agent_uid, instance_uid=agent_uid)
    try:
        with pytest.raises(TaskRefusedError, match=f"refusing to redefine domain {new_dom}"):
            await b.run(finish)
        assert b.hv.disk_path(new_dom) == (b.root / other).resolve()   # left as it was
        assert b.hv.owner(new_dom) is None
        # Once the namesake is gone, the same Finish defines ours and records the owner.
        remove(b, new_dom)
        out = await b.run(finish)
        assert out.result.power_state == PowerState.RUNNING.value
        assert b.hv.owner(new_dom) == agent_uid
    finally:
        remove(b, new_dom)
        await a.run(spec("a", TaskAction.DESTROY, disk_path=rel))


async def test_migrate_disk_refuses_another_instances_domain_before_the_power_off(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, _, new_rel = names(agent_uid)
    await spawn(a, dom, rel)
    a.hv.set_owner(dom, "another-instance")
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=agent_uid,
                     expected_bytes=disks.GIB))
    try:
        with pytest.raises(TaskRefusedError, match="refusing to power off and hold"):
            await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                             peer=PEER, transfer_id=agent_uid, instance_uid=agent_uid))
        assert a.hv.state(dom) == PowerState.RUNNING
    finally:
        remove(a, dom)


async def test_migrate_disk_stamps_an_unowned_source_and_the_hold_keeps_it(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, b = agent_pair
    dom, rel, _, new_rel = names(agent_uid)
    await spawn(a, dom, rel)
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=agent_uid,
                     expected_bytes=(a.root / rel).stat().st_size))
    await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel, peer=PEER,
                     transfer_id=agent_uid, power_off_timeout_seconds=1,
                     instance_uid=agent_uid))
    assert not a.hv.exists(dom)   # held
    await a.run(spec("a", TaskAction.RESTORE_SOURCE, domain_name=dom, disk_path=rel,
                     flavor=SMALL, instance_uid=agent_uid))
    try:
        assert a.hv.owner(dom) == agent_uid   # the held definition carried it back
    finally:
        remove(a, dom)


def test_stop_vms_on_exit_stops_only_domains_vmresize_owns(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    ours, theirs = f"ours-{agent_uid[:8]}", f"theirs-{agent_uid[:8]}"
    namesake(a, ours, agent_uid)
    namesake(a, theirs, None)
    try:
        assert isinstance(a.hv, LibvirtHypervisor)
        _stop_vms(a.hv)
        assert a.hv.state(ours) == PowerState.SHUTOFF
        assert a.hv.state(theirs) == PowerState.RUNNING
    finally:
        remove(a, ours)
        remove(a, theirs)
