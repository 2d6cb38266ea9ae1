"""Two real agents, each with its own embedded QEMU root, resize a real QEMU VM.

Each agent process is one simulated host: its storage root, its ``qemu:///embed`` root
and its migration address (127.0.0.2 and 127.0.0.3). The test plays the operator: it
creates the HostTasks on a real kube-apiserver and checks what the agents did, on disk
and in the QEMU processes they run. Confirm and revert both run end to end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.support.agent_harness import AgentProcess, stop_agents, write_migration_key
from tests.support.checksum import file_disk_checksum
from tests.support.kube import kubectl, kubectl_json
from tests.support.owners import create_owner
from tests.support.polling import wait_for

from vmresize.agent.hypervisor import embedded
from vmresize.agent.vmfiles import disks
from vmresize.api import naming
from vmresize.api.meta import API_VERSION

WAIT = 180.0  # TCG on 2 shared cores; a bound, not a performance assertion
SEED = "vmresize e2e: the source disk"
SMALL = {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1}
BIG = {"vcpus": 2, "memoryMiB": 128, "diskGiB": 2}


@pytest.fixture
def agent_hosts(kubeconfig: Path, namespace: str,
                tmp_path: Path) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """Two embedded-QEMU agents on 127.0.0.2 and 127.0.0.3; stopped, VMs killed, after."""
    embedded.become_subreaper()  # QEMU outlives a stopped agent and comes to us
    embedded.start_reaper(only="qemu-system")  # never our own Popen children
    key = write_migration_key(tmp_path / "migration_key")
    agents = []
    for address in ("127.0.0.2", "127.0.0.3"):
        name = f"q-{uuid.uuid4().hex[:8]}"
        agents.append(AgentProcess(name=name, workdir=tmp_path / name, address=address,
                                   kubeconfig=kubeconfig, namespace=namespace,
                                   key_file=key, embedded=True).start())
    try:
        yield agents[0], agents[1]
    finally:
        stop_agents(agents, kubeconfig)


def ready_status(agent: AgentProcess, kubeconfig: Path) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        if not agent.alive():
            raise AssertionError(f"agent {agent.name} exited:\n{agent.log_tail()}")
        st = (kubectl_json(kubeconfig, "get", "hosts.vmresize.io", agent.name) or {}).get(
            "status", {})
        return st if st.get("ready") else None
    return wait_for(check, timeout=WAIT, what=f"Host {agent.name} ready")


def create_task(kubeconfig: Path, namespace: str, agent: AgentProcess, **spec: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    # The agents fence destructive steps on an owner whose status names the task.
    owner, uid = create_owner(kubeconfig, namespace, str(spec.get("action")), name).split()
    body = {"apiVersion": API_VERSION, "kind": "HostTask",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {naming.HOST_LABEL: agent.name}},
            "spec": {"host": agent.name, "owner": f"{namespace}/{owner}", "ownerUid": uid,
                     "instance": f"{namespace}/vm", **spec}}
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(body))
    return name


def task_status(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any]:
    doc = kubectl_json(kubeconfig, "-n", namespace, "get", "hosttasks.vmresize.io", name)
    status: dict[str, Any] = (doc or {}).get("status", {})
    return status


def wait_succeeded(kubeconfig: Path, namespace: str, agent: AgentProcess, name: str
                   ) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        st = task_status(kubeconfig, namespace, name)
        return st if st.get("phase") in ("Succeeded", "Failed") else None
    try:
        status = wait_for(finished, timeout=WAIT, what=f"task {name} on {agent.name}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{agent.log_tail()}") from None
    assert status["phase"] == "Succeeded", f"{status}\n{agent.log_tail()}"
    return status


def run_task(kubeconfig: Path, namespace: str, agent: AgentProcess, **spec: Any
             ) -> dict[str, Any]:
    name = create_task(kubeconfig, namespace, agent, **spec)
    return wait_succeeded(kubeconfig, namespace, agent, name)


def qemu_args(agent: AgentProcess, domain: str) -> list[str] | None:
    """The argv of the QEMU process running ``domain`` on ``agent``, if one runs."""
    pidfile = agent.libvirt_root / "run" / "qemu" / f"{domain}.pid"
    try:
        pid = int(pidfile.read_text().strip())
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return raw.decode(errors="replace").split("\0")


def arg_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def sha256(path: Path) -> str:
    """The disk checksum the agents report (an independent implementation)."""
    return file_disk_checksum(path)


def move(kubeconfig: Path, namespace: str, src: AgentProcess, dst: AgentProcess, *,
         restart_source: bool = False) -> tuple[str, str, str, str, str]:
    """Spawn on src, Prepare on dst, MigrateDisk src→dst, Finish on dst with BIG.

    With ``restart_source`` the source agent is restarted while its VM runs: the VM keeps
    running (same QEMU process) and the new agent drives it.
    """
    wait_ready = ready_status(src, kubeconfig)
    assert wait_ready["hypervisor"].startswith("qemu:///embed")
    dst_st = ready_status(dst, kubeconfig)
    dom, new_dom = naming.domain_name(namespace, "vm"), naming.domain_name(namespace, "vm", "r")
    rel = naming.disk_path(namespace, "vm", uuid.uuid4().hex)
    new_rel = naming.disk_path(namespace, "vm", uuid.uuid4().hex)
    spawned = run_task(kubeconfig, namespace, src, action="Spawn", domainName=dom,
                       diskPath=rel, flavor=SMALL, seedPattern=SEED)
    assert spawned["result"]["powerState"] == "Running"
    argv = qemu_args(src, dom)
    assert argv is not None, "no QEMU process for the spawned domain"
    assert "tcg" in " ".join(argv)
    if restart_source:
        pid = (src.libvirt_root / "run" / "qemu" / f"{dom}.pid").read_text()
        assert src.stop() == 0
        src.start()
        ready_status(src, kubeconfig)
        assert (src.libvirt_root / "run" / "qemu" / f"{dom}.pid").read_text() == pid
        assert qemu_args(src, dom) is not None
    tid = f"x-{uuid.uuid4().hex[:8]}"
    run_task(kubeconfig, namespace, dst, action="Prepare", diskPath=new_rel, transferId=tid,
             expectedBytes=spawned["result"]["diskGiB"] * 1024**3)  # the operator's bound
    sent = run_task(kubeconfig, namespace, src, action="MigrateDisk", domainName=dom,
                    diskPath=rel, transferId=tid, powerOffTimeoutSeconds=2,
                    peer={"name": dst.name, "address": dst.address,
                          "port": dst_st["migrationEndpoint"]["port"],
                          "hostKey": dst_st["hostKey"]})
    checksum: str = sent["result"]["checksum"]
    assert sent["result"]["powerState"] == "Shutoff"
    assert sent["result"]["downtimeSeconds"] >= 0
    assert qemu_args(src, dom) is None  # powered off: no QEMU left for it
    # Invariant 2: the destination's copy equals the powered-off source before growing.
    source_sha = sha256(src.storage_root / rel)
    assert checksum == source_sha
    assert sha256(dst.storage_root / new_rel) == source_sha
    done = run_task(kubeconfig, namespace, dst, action="Finish", domainName=new_dom,
                    diskPath=new_rel, expectedChecksum=checksum, transferId=tid, flavor=BIG)
    assert (done["result"]["vcpus"], done["result"]["memoryMiB"],
            done["result"]["diskGiB"]) == (2, 128, 2)
    argv = qemu_args(dst, new_dom)
    assert argv is not None, "no QEMU process for the resized domain"
    assert arg_after(argv, "-smp").split(",")[0] == "2"
    return dom, rel, new_dom, new_rel, source_sha


def test_resize_real_vm_between_two_agents_then_confirm(
        agent_hosts: tuple[AgentProcess, AgentProcess], kubeconfig: Path,
        namespace: str) -> None:
    src, dst = agent_hosts
    dom, rel, new_dom, _, _ = move(kubeconfig, namespace, src, dst, restart_source=True)
    assert qemu_args(dst, new_dom) is not None
    run_task(kubeconfig, namespace, src, action="Confirm", domainName=dom, diskPath=rel)
    assert not (src.storage_root / rel).exists()
    assert qemu_args(dst, new_dom) is not None  # Confirm never touches the destination


def test_resize_real_vm_then_revert_restores_the_untouched_source(
        agent_hosts: tuple[AgentProcess, AgentProcess], kubeconfig: Path,
        namespace: str) -> None:
    src, dst = agent_hosts
    dom, rel, new_dom, new_rel, source_sha = move(kubeconfig, namespace, src, dst)
    run_task(kubeconfig, namespace, dst, action="CleanupDest", domainName=new_dom,
             diskPath=new_rel)
    assert qemu_args(dst, new_dom) is None
    assert not (dst.storage_root / new_rel).exists()
    assert sha256(src.storage_root / rel) == source_sha  # invariant 1: untouched
    restored = run_task(kubeconfig, namespace, src, action="RestoreSource", domainName=dom,
                        diskPath=rel, flavor=SMALL)
    assert restored["result"]["powerState"] == "Running"
    assert (restored["result"]["vcpus"], restored["result"]["memoryMiB"]) == (1, 64)
    argv = qemu_args(src, dom)
    assert argv is not None
    assert arg_after(argv, "-smp").split(",")[0] == "1"
    assert disks.read_head(src.storage_root, rel, len(SEED)) == SEED.encode()


def test_source_agent_killed_during_power_off_resumes_the_migration(
        agent_hosts: tuple[AgentProcess, AgentProcess], kubeconfig: Path,
        namespace: str) -> None:
    src, dst = agent_hosts
    ready_status(src, kubeconfig)
    dst_st = ready_status(dst, kubeconfig)
    dom = naming.domain_name(namespace, "vm")
    rel = naming.disk_path(namespace, "vm", uuid.uuid4().hex)
    new_rel = naming.disk_path(namespace, "vm", uuid.uuid4().hex)
    run_task(kubeconfig, namespace, src, action="Spawn", domainName=dom, diskPath=rel,
             flavor=SMALL, seedPattern=SEED)
    tid = f"x-{uuid.uuid4().hex[:8]}"
    run_task(kubeconfig, namespace, dst, action="Prepare", diskPath=new_rel, transferId=tid,
             expectedBytes=SMALL["diskGiB"] * 1024**3)
    grace = 15  # the guest (firmware only) ignores ACPI: the agent must force it off
    name = create_task(kubeconfig, namespace, src, action="MigrateDisk", domainName=dom,
                       diskPath=rel, transferId=tid, powerOffTimeoutSeconds=grace,
                       peer={"name": dst.name, "address": dst.address,
                             "port": dst_st["migrationEndpoint"]["port"],
                             "hostKey": dst_st["hostKey"]})
    marker = src.storage_root / (rel + ".poweroff")
    wait_for(lambda: marker.exists() and task_status(kubeconfig, namespace, name)
             .get("phase") == "Running", timeout=WAIT, what="MigrateDisk waiting for power-off")
    src.kill()  # kill -9 in the middle of the graceful power-off
    assert qemu_args(src, dom) is not None  # the VM outlives its agent
    src.start()
    status = wait_succeeded(kubeconfig, namespace, src, name)
    assert status["attempt"] == 2
    # Forced off `grace` seconds after the *first* attempt's request: the wait counts from
    # it; the VM ran meanwhile, so the downtime counts from the stop (issue 19 finding 8).
    result = status["result"]
    assert result["powerOff"] == "Forced"
    assert result["powerOffWaitSeconds"] >= grace
    assert (datetime.fromisoformat(result["stoppedAt"])
            - datetime.fromisoformat(result["poweredOffAt"])).total_seconds() >= grace
    assert result["downtimeSeconds"] >= 0
    assert qemu_args(src, dom) is None
    assert sha256(dst.storage_root / new_rel) == status["result"]["checksum"]
    assert sha256(src.storage_root / rel) == status["result"]["checksum"]


def test_stop_vms_on_exit_leaves_no_qemu_behind(
        agent_hosts: tuple[AgentProcess, AgentProcess], kubeconfig: Path,
        namespace: str) -> None:
    agent, _ = agent_hosts
    agent.stop()
    agent.stop_vms_on_exit = True
    agent.start()
    ready_status(agent, kubeconfig)
    dom = naming.domain_name(namespace, "vm")
    # As the operator sends it: the Instance's UID, which Spawn records as the domain's
    # owner (the agent stops only domains vmresize owns).
    run_task(kubeconfig, namespace, agent, action="Spawn", domainName=dom, flavor=SMALL,
             diskPath=naming.disk_path(namespace, "vm", uuid.uuid4().hex),
             instanceUid=str(uuid.uuid4()))
    assert qemu_args(agent, dom) is not None
    assert agent.stop() == 0
    assert qemu_args(agent, dom) is None
