"""The small pure helpers around the lifecycle, and the storage layer's error translation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from vmresize.api import naming
from vmresize.api.apierrors import classify, status_reason
from vmresize.api.envsettings import SettingsError
from vmresize.api.flavor import FlavorSpec
from vmresize.api.host import Allocation, Host, HostSpec, HostStatus, MigrationEndpoint
from vmresize.api.hosttask import HostTask, TaskAction, TaskFlavor
from vmresize.api.instance import Instance, InstanceSpec, InstanceStatus
from vmresize.api.meta import Resources
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec, VMResizeStatus
from vmresize.operator.decisions import conditions
from vmresize.operator.decisions.tasks import parse_task_name, resize_task
from vmresize.operator.decisions.views import host_state
from vmresize.operator.errors import (
    ApiAlreadyExistsError,
    ApiConflictError,
    ApiNotFoundError,
    ApiRejectedError,
    ApiUnavailableError,
    NotReadyError,
    OperatorError,
)
from vmresize.operator.persistence.storage import _call
from vmresize.operator.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _raises(status: int | None, body: str = "") -> Callable[[], object]:
    def fn() -> object:
        e = ApiException(status=status, reason="x")
        e.body = body
        raise e
    return fn


# The same statuses as the agent's adapter test (tests/unit/agent/test_kube_errors.py).
@pytest.mark.parametrize(("status", "body", "error", "kopf_kind"), [
    (None, "", ApiUnavailableError, kopf.TemporaryError),  # no HTTP answer: connection-level
    (0, "", ApiUnavailableError, kopf.TemporaryError),
    (404, '{"reason":"NotFound"}', ApiNotFoundError, kopf.PermanentError),
    (409, '{"reason":"Conflict"}', ApiConflictError, kopf.TemporaryError),
    (409, '{"reason":"AlreadyExists"}', ApiAlreadyExistsError, None),
    (408, "", ApiUnavailableError, kopf.TemporaryError),
    (429, "", ApiUnavailableError, kopf.TemporaryError),
    (503, "", ApiUnavailableError, kopf.TemporaryError),
    (422, '{"reason":"Invalid"}', ApiRejectedError, kopf.PermanentError),
    (403, "", ApiRejectedError, kopf.PermanentError),
])
def test_api_errors_are_typed(status: int | None, body: str, error: type[OperatorError],
                              kopf_kind: type[Exception] | None) -> None:
    with pytest.raises(error) as info:
        _call("op", _raises(status, body))
    assert type(info.value) is error
    assert isinstance(info.value.__cause__, ApiException)
    assert info.value.retryable is classify(status, status_reason(body)).retryable
    if kopf_kind is not None:
        assert isinstance(info.value, kopf_kind)
    else:  # the caller decides (create_task treats it as done)
        assert not isinstance(info.value, kopf.TemporaryError | kopf.PermanentError)


def test_transport_errors_are_temporary() -> None:
    def fn() -> None:
        raise ProtocolError("reset")
    with pytest.raises(ApiUnavailableError):
        _call("op", fn)


@pytest.mark.parametrize("action", list(TaskAction))
def test_task_names_round_trip(action: TaskAction) -> None:
    uid = "8b164d6e-5e42-4730-be9a-95e30f3a2239"
    assert parse_task_name(naming.task_name(uid, action, 3)) == (action, 3)
    assert parse_task_name(None) == (None, 0)


def _world() -> tuple[VMResize, Instance, Host]:
    r = VMResize(metadata={"name": "r1", "namespace": "ns", "uid": "aaaaaaaa-1111"},
                 spec=VMResizeSpec(instance_name="vm"),
                 status=VMResizeStatus(phase=ResizePhase.PREPARING, source_host="a",
                                       dest_host="b", dest_domain_name="ns.vm",
                                       dest_disk_path="instances/ns/vm/aaaaaaaa/disk.qcow2",
                                       source_checksum="ab" * 32))
    inst = Instance(metadata={"name": "vm", "namespace": "ns", "uid": "bbbbbbbb-2222"},
                    spec=InstanceSpec(flavor="small"),
                    status=InstanceStatus(host="a", domain_name="ns.vm", disk_gib=10,
                                          disk_path="instances/ns/vm/bbbbbbbb/disk.qcow2"))
    dest = Host(metadata={"name": "b"}, status=HostStatus(
        migration_endpoint=MigrationEndpoint(address="127.0.0.2", port=2222),
        host_key="ssh-ed25519 AAAA"))
    return r, inst, dest


def test_resize_tasks_act_on_the_right_copy() -> None:
    r, inst, dest = _world()
    assert r.status is not None
    assert inst.status is not None
    new = FlavorSpec(vcpus=2, memory_mib=2048, disk_gib=20)
    old = TaskFlavor(vcpus=1, memory_mib=1024, disk_gib=10)

    def build(action: TaskAction, host: str) -> HostTask:
        return resize_task(action, host, 0, namespace="sys", resize=r, inst=inst, new=new,
                           old=old, dest=dest)

    prep = build(TaskAction.PREPARE, "b")
    assert prep.spec.disk_path == r.status.dest_disk_path
    assert prep.metadata["labels"][naming.HOST_LABEL] == "b"
    assert prep.metadata["namespace"] == "sys"
    mig = build(TaskAction.MIGRATE_DISK, "a")
    assert mig.spec.disk_path == inst.status.disk_path
    assert mig.spec.peer is not None
    assert mig.spec.peer.address == "127.0.0.2"
    assert mig.spec.peer_disk_path == r.status.dest_disk_path
    assert mig.spec.power_off_timeout_seconds == 60
    # the target size, for the source to refuse before the power-off what Finish would
    assert mig.spec.flavor == fin_flavor(new)
    quick = resize_task(TaskAction.MIGRATE_DISK, "a", 0, namespace="sys", resize=r, inst=inst,
                        new=new, old=old, dest=dest, power_off_timeout_seconds=1)
    assert quick.spec.power_off_timeout_seconds == 1
    fin = build(TaskAction.FINISH, "b")
    assert fin.spec.expected_checksum == "ab" * 32
    assert fin.spec.transfer_id == prep.spec.transfer_id == mig.spec.transfer_id
    assert fin.spec.flavor is not None
    assert fin.spec.flavor.vcpus == 2
    conf = build(TaskAction.CONFIRM, "a")
    assert conf.spec.disk_path == inst.status.disk_path
    restore = build(TaskAction.RESTORE_SOURCE, "a")
    assert restore.spec.flavor == old
    clean = build(TaskAction.CLEANUP_DEST, "b")
    assert clean.spec.disk_path == r.status.dest_disk_path
    assert clean.spec.transfer_id == prep.spec.transfer_id


def fin_flavor(new: FlavorSpec) -> TaskFlavor:
    return TaskFlavor(vcpus=new.vcpus, memory_mib=new.memory_mib, disk_gib=new.disk_gib)


def test_migrate_needs_the_dest_endpoint() -> None:
    r, inst, _ = _world()
    with pytest.raises(NotReadyError):
        resize_task(TaskAction.MIGRATE_DISK, "a", 0, namespace="sys", resize=r, inst=inst,
                    new=FlavorSpec(vcpus=1, memory_mib=64, disk_gib=1), old=None,
                    dest=Host(metadata={"name": "b"}))


def test_settings_defaults_and_env() -> None:
    assert Settings.from_env({}) == Settings.from_env({"VMRESIZE_MAX_ATTEMPTS": "3"})
    s = Settings.from_env({"VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST": "True",
                           "VMRESIZE_MAX_ATTEMPTS": " 4 ", "VMRESIZE_NAMESPACE": "ops",
                           "VMRESIZE_RAM_WEIGHT_MULTIPLIER": "-1",
                           "VMRESIZE_POLL_SECONDS": ""})   # empty: the default
    assert Settings.from_env({}).power_off_timeout_seconds == 60   # Nova's shutdown_timeout
    assert s.allow_resize_to_same_host
    assert s.max_attempts == 4
    assert s.namespace == "ops"
    assert s.ram_weight_multiplier == -1.0
    assert s.poll_seconds == 5.0
    assert Settings.from_env({}).namespace == naming.DEFAULT_NAMESPACE


@pytest.mark.parametrize(("name", "value", "says"), [
    ("VMRESIZE_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
    ("VMRESIZE_POWER_OFF_TIMEOUT_SECONDS", "99999", "less than or equal to 3600"),
    ("VMRESIZE_POLL_SECONDS", "0", "greater than or equal to 0.1"),
    ("VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST", "maybe", "valid boolean"),
    ("VMRESIZE_RAM_WEIGHT_MULTIPLIER", "nan", "finite number"),
    ("VMRESIZE_NAMESPACE", "Not_A_Namespace", "match pattern"),
    ("VMRESIZE_PEERING_LIFETIME_SECONDS", "1", "greater than or equal to 2"),
])
def test_settings_out_of_range_is_an_error_naming_the_variable(
        name: str, value: str, says: str) -> None:
    """No clamping: the value is refused, and the message says which variable and why."""
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert f"{name}: " in str(err.value)
    assert says in str(err.value)
    assert repr(value) in str(err.value)


def test_conditions_follow_the_phase() -> None:
    conds = conditions.resize_conditions([], ResizePhase.VERIFY_RESIZE, "VerifyResize", "m",
                                         NOW, 1)
    by = {c.type: c.status for c in conds}
    assert by == {"Ready": "False", "VerifyResize": "True", "Failed": "False",
                  "RolledBack": "False", "Reconciling": "False", "Stalled": "False"}
    conds = conditions.resize_conditions(conds, ResizePhase.ROLLED_BACK, "RolledBack", "m",
                                         NOW, 1)
    by = {c.type: c.status for c in conds}
    assert by["Ready"] == "True"
    assert by["RolledBack"] == "True"
    assert by["Stalled"] == "True"  # the resize asked for did not happen (kstatus: Failed)


def test_host_state_counts_allocations_and_labels() -> None:
    h = Host(metadata={"name": "h", "labels": {"ssd": "true"}},
             spec=HostSpec(reserved=Resources(memory_mib=512)),
             status=HostStatus(capacity=Resources(vcpus=4, memory_mib=4608, disk_gib=100),
                               ready=True, heartbeat=NOW, allocations={
                                   "Instance/ns/a": Allocation(
                                       consumer="ns/a", kind="Instance",
                                       resources=Resources(vcpus=1, memory_mib=1024,
                                                           disk_gib=10))}))
    hs = host_state(h, 7.0)
    assert hs.free() == (15.0, 3072.0, 90.0)
    assert hs.labels == {"ssd": "true"}
