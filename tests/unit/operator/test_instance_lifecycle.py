"""The Instance decision table, exhaustively: every (stage, look) pair, from every phase an
Instance can be in, keeps record-then-act and the claim's rules; and the rules that say
something, one by one. No Kubernetes, no clock."""

from __future__ import annotations

import itertools

import pytest

from vmresize.api.flavor import FlavorSpec
from vmresize.api.hosttask import HostTask, HostTaskStatus, TaskAction, TaskPhase, TaskResult
from vmresize.api.instance import (
    AdoptSource,
    Instance,
    InstancePhase,
    InstanceSpec,
    InstanceStatus,
    PowerState,
)
from vmresize.operator.decisions.instance_lifecycle import (
    ADOPT_REFUSED,
    TABLE,
    BuildTask,
    Claim,
    InstanceStep,
    Look,
    Release,
    Seen,
    Stage,
    build_task_name,
    destroy_task_name,
    step,
)
from vmresize.operator.decisions.tasks import instance_task

IP = InstancePhase
SMALL = FlavorSpec(vcpus=2, memory_mib=512, disk_gib=4)


def inst(*, adopt: bool = False, host: str | None = None) -> Instance:
    return Instance(metadata={"name": "vm", "namespace": "ns", "uid": "u-1"},
                    spec=InstanceSpec(flavor="small", host=host,
                                      adopt=AdoptSource(domain_name="old") if adopt else None))


def task(i: Instance, phase: TaskPhase, **result: object) -> HostTask:
    t = instance_task(TaskAction.SPAWN, "h1", namespace="vmresize", inst=i, flavor=SMALL)
    return t.model_copy(update={"status": HostTaskStatus(
        phase=phase, message="boom" if phase is TaskPhase.FAILED else "",
        result=TaskResult.model_validate(result))})


def seen_for(look: Look, i: Instance) -> Seen:
    if look in (Look.TASK_WAITING, Look.TASK_FAILED, Look.TASK_SUCCEEDED):
        phase = {Look.TASK_WAITING: TaskPhase.RUNNING, Look.TASK_FAILED: TaskPhase.FAILED,
                 Look.TASK_SUCCEEDED: TaskPhase.SUCCEEDED}[look]
        return Seen(look, text="boom" if look is Look.TASK_FAILED else "", task=task(i, phase),
                    flavor=SMALL)
    if look in (Look.CHOSEN, Look.CLAIMED, Look.CLAIM_REFUSED, Look.QUOTA_REFUSED):
        return Seen(look, host="h2", flavor=SMALL)
    return Seen(look, text="ns/other", flavor=SMALL)


#: The statuses an Instance meets each stage with: nothing recorded yet, and recorded.
STATUSES = [
    InstanceStatus(),
    InstanceStatus(host="h1", message="Claiming resources on h1"),
    InstanceStatus(phase=IP.BUILDING, host="h1", current_task=build_task_name(inst())),
    InstanceStatus(phase=IP.BUILDING, host="h1", current_task=build_task_name(inst(adopt=True))),
    InstanceStatus(phase=IP.ACTIVE, host="h1", domain_name="vm", flavor="small"),
    InstanceStatus(phase=IP.ACTIVE, host="h1", domain_name="vm", active_resize="r",
                   active_resize_uid="ru"),
    InstanceStatus(phase=IP.DELETING, host="h1", domain_name="vm",
                   current_task=destroy_task_name(inst())),
    InstanceStatus(phase=IP.ERROR, message="x"),
]
STAGE_PHASES = {Stage.PLACING: {IP.PENDING}, Stage.BUILDING: {IP.BUILDING},
                Stage.SETTLED: {IP.ACTIVE, IP.ERROR}}
TASK_LOOKS = (Look.TASK_MISSING, Look.TASK_WAITING, Look.TASK_FAILED, Look.TASK_SUCCEEDED)


def possible(stage: Stage, look: Look, st: InstanceStatus, adopt: bool) -> bool:
    """Whether the plumbing's look can find ``look`` in ``stage`` with ``st`` (its contract)."""
    if st.phase not in STAGE_PHASES.get(stage, set(IP)):
        return False                 # the stage is the phase's (deletion: any phase)
    if look in (Look.HOST_RECORDED, Look.CLAIMED, Look.CLAIM_REFUSED, Look.QUOTA_REFUSED):
        return st.host is not None   # a claim (and the quota's charge) on the host recorded
    if look is Look.DOMAIN_OWNED:
        return adopt                 # only an Adopt looks for the domain's owner
    if look in TASK_LOOKS:           # a task is looked at once its name is recorded
        i = inst(adopt=adopt)
        name = destroy_task_name(i) if stage is Stage.DELETING else build_task_name(i)
        return st.current_task == name and st.host is not None
    return True


PAIRS = [p for p in itertools.product(Stage, Look, STATUSES, (False, True)) if possible(*p)]


def named_now(st: InstanceStatus, out: InstanceStep) -> str | None:
    """The task the status names once this step is recorded."""
    return (out.status or st).current_task


@pytest.mark.parametrize(("stage", "look", "st", "adopt"), PAIRS,
                         ids=[f"{s.value}-{k.value}-{n % len(STATUSES)}-{a}"
                              for n, (s, k, _, a) in enumerate(PAIRS)])
def test_every_pair_records_before_it_acts(stage: Stage, look: Look, st: InstanceStatus,
                                           adopt: bool) -> None:
    i = inst(adopt=adopt)
    out = step(i, st, stage, seen_for(look, i))
    if (stage, look) not in TABLE:
        assert out == InstanceStep(), "unlisted pairs change nothing and wait"
        return
    if out.wait is not None:
        assert (out.status, out.act, out.done) == (None, None, False), "a wait writes nothing"
        assert out.text
    act = out.act
    if isinstance(act, Claim):
        # A claim only while placing, on the host the status names once recorded.
        assert stage is Stage.PLACING
        assert act.host == (out.status or st).host
    if isinstance(act, BuildTask):
        # Record, then act: the task created is the one the (written) status names.
        name = (destroy_task_name(i) if act.action is TaskAction.DESTROY
                else build_task_name(i))
        assert named_now(st, out) == name
        assert (act.action is TaskAction.DESTROY) == (stage is Stage.DELETING)
        assert act.action is not TaskAction.ADOPT or adopt
    if isinstance(act, Release):
        # The claim goes only with a failed build, or at the very end of a deletion.
        assert (stage, look) in ((Stage.BUILDING, Look.TASK_FAILED),) or (
            stage is Stage.DELETING and out.done)
    if stage is Stage.DELETING and out.done:
        assert isinstance(act, Release), "an Instance goes only with its claim released"
    if stage is Stage.DELETING and look is Look.HELD:
        assert (act, out.done) == (None, False), "a held Instance waits for its resize"
    if out.status is not None:
        # A step never writes a phase backwards into Pending, and Active only from a build.
        assert out.status.phase is not IP.PENDING or st.phase is IP.PENDING
        assert out.status.phase is not IP.ACTIVE or look is Look.TASK_SUCCEEDED \
            or st.phase is IP.ACTIVE
    if out.again:
        assert out.status is not None, "look again only after a record"
        assert out.act is None


def test_the_pairs_cover_the_table() -> None:
    # a filter that left nothing would make the test above pass
    assert {(s, k) for s, k, _, _ in PAIRS} >= set(TABLE)
    assert len(PAIRS) > 300


def test_table_names_every_look_a_stage_can_see() -> None:
    for stage, look in TABLE:
        assert isinstance(stage, Stage)
        assert isinstance(look, Look)
    for stage in (Stage.BUILDING, Stage.DELETING):
        for look in (Look.TASK_UNRECORDED, Look.TASK_MISSING, Look.TASK_WAITING,
                     Look.TASK_FAILED, Look.TASK_SUCCEEDED):
            assert (stage, look) in TABLE, (stage, look)
    for look in (Look.FLAVOR_MISSING, Look.DOMAIN_OWNED, Look.NO_VALID_HOST, Look.CHOSEN,
                 Look.HOST_RECORDED, Look.CLAIMED, Look.CLAIM_REFUSED, Look.QUOTA_REFUSED):
        assert (Stage.PLACING, look) in TABLE, look
    assert (Stage.SETTLED, Look.TICK) in TABLE


def test_a_quota_refusal_is_an_error_with_its_numbers_and_no_host() -> None:
    st = InstanceStatus(host="h2", message="Claiming resources on h2")
    msg = "VMQuota q would be exceeded (instances: 3 used + 1 asked > 3 allowed)"
    out = step(inst(), st, Stage.PLACING, Seen(Look.QUOTA_REFUSED, host="h2", text=msg))
    assert out.status is not None
    assert (out.status.phase, out.status.host, out.status.message) == (IP.ERROR, None, msg)
    assert (out.act, out.done, out.reason) == (None, True, "QuotaExceeded")
    assert out.events == (("Warning", "QuotaExceeded", msg),)


def test_happy_path_choose_claim_build_active() -> None:
    i, st = inst(), InstanceStatus()
    out = step(i, st, Stage.PLACING, Seen(Look.CHOSEN, host="h2", flavor=SMALL))
    assert out.status is not None
    assert out.status.host == "h2"
    assert out.act == Claim("h2")
    assert not out.changed
    st = out.status
    out = step(i, st, Stage.PLACING, Seen(Look.CLAIMED, host="h2", flavor=SMALL))
    assert out.status is not None
    assert out.status.phase is IP.BUILDING
    assert out.act == BuildTask(TaskAction.SPAWN, "h2")
    assert out.events == (("Normal", "Building", "Spawn on h2"),)
    st = out.status
    t = task(i, TaskPhase.SUCCEEDED, vcpus=3, domain_name="ns_vm")
    out = step(i, st, Stage.BUILDING, Seen(Look.TASK_SUCCEEDED, task=t, flavor=SMALL))
    assert out.status is not None
    assert out.done
    assert out.changed
    assert out.status.phase is IP.ACTIVE
    assert out.status.current_task is None
    # The task's report wins; the flavor fills what it did not say.
    assert (out.status.vcpus, out.status.memory_mib, out.status.disk_gib) == (3, 512, 4)
    assert out.status.power_state is PowerState.RUNNING


def test_a_refused_claim_chooses_again_but_a_named_host_says_so_once() -> None:
    st = InstanceStatus(host="h2", message="Claiming resources on h2")
    out = step(inst(), st, Stage.PLACING, Seen(Look.CLAIM_REFUSED, host="h2"))
    assert out.status is not None
    assert out.status.host is None
    assert out.changed
    assert out.status.message == "Could not claim on h2; choosing again"
    named = inst(host="h2")
    out = step(named, st, Stage.PLACING, Seen(Look.CLAIM_REFUSED, host="h2"))
    assert out.status is not None
    assert out.reason == "DoesNotFit"
    assert not out.changed
    # No valid host: said once, then a quiet retry.
    out = step(inst(), InstanceStatus(), Stage.PLACING, Seen(Look.NO_VALID_HOST, text="Ram: 2"))
    assert out.status is not None
    assert out.events[0][1] == "NoValidHost"
    again = step(inst(), out.status, Stage.PLACING, Seen(Look.NO_VALID_HOST, text="Ram: 2"))
    assert again.status is None
    assert again.wait == 10


def test_an_adopt_of_an_owned_domain_is_refused_with_nothing_claimed() -> None:
    out = step(inst(adopt=True, host="h1"), InstanceStatus(), Stage.PLACING,
               Seen(Look.DOMAIN_OWNED, text="ns/first"))
    assert out.status is not None
    assert out.status.phase is IP.ERROR
    assert out.status.host is None
    assert out.act is None
    assert out.done
    assert out.reason == ADOPT_REFUSED
    assert "ns/first" in out.status.message


def test_a_failed_build_releases_the_claim_of_the_host_it_ran_on() -> None:
    i = inst()
    st = InstanceStatus(phase=IP.BUILDING, host="h1", current_task=build_task_name(i))
    out = step(i, st, Stage.BUILDING, Seen(Look.TASK_FAILED, text="no space"))
    assert out.act == Release("h1")
    assert out.status is not None
    assert out.status.host is None
    assert out.status.message == "Spawn on h1 failed: no space"
