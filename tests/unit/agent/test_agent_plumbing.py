"""Agent plumbing without a cluster: libvirt error translation at the adapter boundary,
domain XML, Host status from capacity, the rate-limited task status writer, the CLI."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from vmresize.agent.errors import DomainNotFoundError, InvalidDomainConfigError
from vmresize.agent.hypervisor import embedded
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor, domain_xml
from vmresize.agent.hypervisor.protocol import DomainSize, DomainSpec, PowerState
from vmresize.agent.kube.client import TaskStatusWriter
from vmresize.agent.kube.registration import Registration, host_status
from vmresize.agent.main import parse_args, published_endpoint
from vmresize.api import naming
from vmresize.api.host import HostStatus
from vmresize.api.hosttask import TaskResult


@pytest.fixture(scope="module")
def agent_test_hv() -> LibvirtHypervisor:
    return LibvirtHypervisor("test:///default")


def test_missing_domain_is_translated_not_leaked(agent_test_hv: LibvirtHypervisor) -> None:
    with pytest.raises(DomainNotFoundError) as err:
        agent_test_hv.state(f"nope-{uuid.uuid4().hex}")
    assert not err.value.retryable
    assert err.value.__cause__ is not None  # the libvirt error is chained, not exposed
    assert agent_test_hv.exists("nope") is False


def test_bad_definition_is_invalid_config(agent_test_hv: LibvirtHypervisor,
                                          tmp_path: Path) -> None:
    spec = DomainSpec(name="bad/name", vcpus=1, memory_mib=64, disk=tmp_path / "d.qcow2")
    with pytest.raises(InvalidDomainConfigError) as err:
        agent_test_hv.define(spec)
    assert not err.value.retryable


def test_set_size_raises_maximums_then_lowers_again(agent_test_hv: LibvirtHypervisor,
                                                    tmp_path: Path) -> None:
    name = f"size-{uuid.uuid4().hex[:6]}"
    agent_test_hv.define(DomainSpec(name=name, vcpus=1, memory_mib=64,
                                    disk=tmp_path / "d.qcow2"))
    try:
        agent_test_hv.set_size(name, DomainSize(vcpus=4, memory_mib=256))
        assert agent_test_hv.get_size(name) == DomainSize(vcpus=4, memory_mib=256)
        agent_test_hv.set_size(name, DomainSize(vcpus=2, memory_mib=128))
        assert agent_test_hv.get_size(name) == DomainSize(vcpus=2, memory_mib=128)
        assert agent_test_hv.disk_path(name) == tmp_path / "d.qcow2"
        assert agent_test_hv.state(name) == PowerState.SHUTOFF
        assert name in agent_test_hv.list_domains()
    finally:
        agent_test_hv.undefine(name)


def test_domain_xml_is_tcg_q35_without_graphics_and_escapes_paths() -> None:
    xml = domain_xml(DomainSpec(name="ns.vm", vcpus=2, memory_mib=128,
                                disk=Path("/r/a'b&c.qcow2"), serial_log=Path("/r/s.log")),
                     domain_type="qemu")
    assert "<domain type=\"qemu\">" in xml
    assert "machine='q35'" in xml
    assert "graphics" not in xml
    assert "a'b&amp;c.qcow2" in xml
    assert "<vcpu placement='static'>2</vcpu>" in xml


def test_embedded_root_must_be_short_enough(tmp_path: Path) -> None:
    long_root = tmp_path / ("x" * embedded.MAX_ROOT_LEN)
    with pytest.raises(ValueError, match="UNIX"):
        embedded.prepare_root(long_root)


def test_host_status_carries_capacity_endpoint_and_key_but_no_allocations(
        agent_test_hv: LibvirtHypervisor, tmp_path: Path) -> None:
    reg = Registration(host="h1", storage_root=tmp_path, address="127.0.0.2", port=2222,
                       host_key="ssh-ed25519 AAAA test")
    doc = host_status(reg, agent_test_hv, ready=True, conditions=[])
    assert "allocations" not in doc
    st = HostStatus.model_validate(doc)
    assert st.capacity is not None
    assert st.capacity.vcpus == agent_test_hv.capacity().vcpus
    assert st.capacity.disk_gib >= 0
    assert st.migration_endpoint is not None
    assert (st.migration_endpoint.address, st.migration_endpoint.port) == ("127.0.0.2", 2222)
    assert st.host_key == "ssh-ed25519 AAAA test"
    assert st.ready is True
    assert [(c.type, c.status) for c in st.conditions] == [("Ready", "True")]
    stopped = host_status(reg, agent_test_hv, ready=False, conditions=st.conditions)
    assert [c["status"] for c in stopped["conditions"]] == ["False"]


class RecordingKube:
    """Records status patches (a stand-in for the API client; plumbing only)."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch_task_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.patches.append(status)


async def test_progress_is_rate_limited_and_the_outcome_always_written() -> None:
    kube = RecordingKube()
    now = [0.0]
    writer = TaskStatusWriter(kube, "ns", "t", min_interval=1.0,  # type: ignore[arg-type]
                              clock=lambda: now[0])
    await writer.running(1)
    for i in range(100):  # 100 callbacks within the same virtual second
        writer.progress(i, 100, 10.0)
        await asyncio.sleep(0)
    await writer.settle()
    now[0] = 5.0
    writer.progress(100, 100, 10.0)
    await writer.settle()
    await writer.succeeded(TaskResult(checksum="abc"), "done")
    progress = [p["progress"] for p in kube.patches[1:-1]]
    assert len(progress) == 2  # the first in the window, then one after it
    assert progress[-1]["bytesDone"] == 100
    assert kube.patches[0]["phase"] == "Running"
    assert kube.patches[-1]["phase"] == "Succeeded"
    assert kube.patches[-1]["result"] == {"checksum": "abc"}


async def test_progress_carries_the_tasks_bandwidth_limit() -> None:
    kube = RecordingKube()
    writer = TaskStatusWriter(kube, "ns", "t", min_interval=0.0)  # type: ignore[arg-type]
    writer.limit_bytes_per_second = 8 << 20   # as the handler sets it from the task
    await writer.running(1)
    writer.progress(1, 2, float(8 << 20))
    await writer.settle()
    assert kube.patches[-1]["progress"]["limitBytesPerSecond"] == 8 << 20
    assert kube.patches[-1]["progress"]["rateBytesPerSecond"] == 8 << 20


def test_cli_flags_and_defaults(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VMRESIZE_HOST_NAME", "node-7")
    monkeypatch.setenv("VMRESIZE_MIGRATION_PORT", "2022")
    cfg = parse_args(["--migration-address", "127.0.0.2", "--migration-key-file", "/k",
                      "--libvirt-uri", "test:///default"])
    assert cfg.host_name == "node-7"
    assert cfg.migration_port == 2022
    assert cfg.namespace == naming.DEFAULT_NAMESPACE
    assert cfg.migration_key_file == Path("/k")
    assert cfg.stop_vms_on_exit is False
    # A flag wins over its variable.
    assert parse_args(["--migration-address", "a", "--migration-key-file", "/k",
                       "--migration-port", "2023"]).migration_port == 2023
    monkeypatch.delenv("VMRESIZE_HOST_NAME")
    with pytest.raises(SystemExit):
        parse_args(["--migration-address", "127.0.0.2", "--migration-key-file", "/k"])
    assert "VMRESIZE_HOST_NAME (--host-name) is required" in capsys.readouterr().err


def test_published_endpoint_is_the_advertised_one_when_set() -> None:
    base = ["--host-name", "h", "--migration-address", "127.0.0.3", "--migration-key-file",
            "/k"]
    assert published_endpoint(parse_args(base), 40022) == ("127.0.0.3", 40022)
    proxied = parse_args([*base, "--migration-advertise-address", "127.0.0.9",
                          "--migration-advertise-port", "41000"])
    assert published_endpoint(proxied, 40022) == ("127.0.0.9", 41000)
    assert published_endpoint(parse_args([*base, "--migration-advertise-port", "41000"]),
                              40022) == ("127.0.0.3", 41000)


@pytest.mark.parametrize(("args", "says"), [
    (["--migration-port", "70000"], "VMRESIZE_MIGRATION_PORT (--migration-port): Input should "
                                    "be less than or equal to 65535 (got --migration-port="),
    (["--heartbeat-seconds", "0.5"], "greater than or equal to 1"),
    (["--libvirt-uri", "system"], "VMRESIZE_LIBVIRT_URI (--libvirt-uri): String should match"),
])
def test_flags_are_validated_by_the_model(args: list[str], says: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        parse_args(["--host-name", "h", "--migration-address", "a",
                    "--migration-key-file", "/k", *args])
    assert err.value.code == 2
    assert says in capsys.readouterr().err


def test_stop_vms_on_exit_from_flag_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["--host-name", "h", "--migration-address", "a", "--migration-key-file", "/k"]
    assert parse_args([*base, "--stop-vms-on-exit"]).stop_vms_on_exit is True
    monkeypatch.setenv("VMRESIZE_STOP_VMS_ON_EXIT", "yes")
    assert parse_args(base).stop_vms_on_exit is True


def test_agent_exits_with_a_clear_error_when_the_migration_key_is_missing(
        tmp_path: Path) -> None:
    from vmresize.agent.main import main

    with pytest.raises(SystemExit) as err:
        main(["--host-name", "h", "--migration-address", "127.0.0.2",
              "--migration-key-file", str(tmp_path / "missing"),
              "--libvirt-uri", "test:///default", "--storage-root", str(tmp_path / "root"),
              "--state-dir", str(tmp_path / "state")])
    assert err.value.code == 1
