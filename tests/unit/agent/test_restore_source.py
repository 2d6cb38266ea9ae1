"""RestoreSource finishes a power-off its move began (issue 18, finding 1).

Once MigrateDisk has asked the guest to shut down (its ``.poweroff`` marker is written
first), the guest may go on shutting down after the step is cancelled or fails. libvirt
still shows it running, so a RestoreSource that only calls ``start`` does nothing and
reports Running for a VM about to stop. Here (libvirt ``test:///default``) the domain
runs with this resize's marker beside its disk, as a cancelled MigrateDisk leaves it: the
VM must go through a power-off and a real start (the test driver gives each start a new
domain ID). The slow guest itself is on real QEMU in tests/e2e/test_restore_source.py.
"""

from __future__ import annotations

import time

from tests.support.agent_steps import SMALL, names, spawn, spec

from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.vmfiles import markers
from vmresize.api.hosttask import TaskAction


def domain_id(ex: Executor, dom: str) -> int:
    return int(ex.hv._dom(dom).ID())  # type: ignore[attr-defined]


async def restore(ex: Executor, dom: str, rel: str, uid: str) -> str:
    out = await ex.run(spec("a", TaskAction.RESTORE_SOURCE, domain_name=dom, disk_path=rel,
                            flavor=SMALL, owner_uid=uid))
    assert out.result.power_state == PowerState.RUNNING.value
    assert ex.hv.state(dom) == PowerState.RUNNING
    return out.message


async def test_a_power_off_the_move_asked_for_is_finished_before_the_start(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)
    marker = a.root / (rel + markers.POWEROFF_SUFFIX)
    # What MigrateDisk wrote right before asking the guest to shut down (grace 60 s).
    markers.power_off_since(marker, f"{agent_uid}/{agent_uid}", time.time(), 60.0)
    before = domain_id(a, dom)
    message = await restore(a, dom, rel, agent_uid)
    assert domain_id(a, dom) != before, "the VM was not powered off and started again"
    assert message.startswith("finished the power-off the move had begun (Graceful)")
    assert not marker.exists()
    # Retried (the operator lost the answer): the marker is gone, the VM is not touched.
    again = domain_id(a, dom)
    assert await restore(a, dom, rel, agent_uid) == f"restarted {dom} on its source"
    assert domain_id(a, dom) == again


async def test_no_power_off_of_this_resize_means_no_restart(
        agent_pair: tuple[Executor, Executor], agent_uid: str) -> None:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)
    before = domain_id(a, dom)
    # A rollback before the power-off (pre-copy's live phase): nothing was asked.
    await restore(a, dom, rel, agent_uid)
    assert domain_id(a, dom) == before
    # Another resize's marker left behind is not ours to finish.
    marker = a.root / (rel + markers.POWEROFF_SUFFIX)
    markers.power_off_since(marker, f"other-uid/{agent_uid}", time.time() - 3600, 60.0)
    await restore(a, dom, rel, agent_uid)
    assert domain_id(a, dom) == before


def test_the_power_off_marker_keeps_its_grace_and_reads_old_ones() -> None:
    m = markers.PowerOff("u/t", 12.5, 90.0)
    assert markers.PowerOff.parse(m.text()) == m
    assert markers.PowerOff.parse("u/t 12.500000\n") == markers.PowerOff("u/t", 12.5)
    assert m.of_owner("u")
    assert not m.of_owner("v")
    assert not m.of_owner(None)
