"""The agent process against a real kube-apiserver, with libvirt test:///default.

Covers registration and heartbeat (including that an admin's ``spec.enabled: false``
survives agent restarts), a clean stop marking the Host not ready, HostTasks run by the
agent (Spawn, refusal of another host's task), and a full resize between two agent
processes over the real asyncssh migration service on 127.0.0.2 and 127.0.0.3.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.agent_harness import AgentProcess, write_migration_key
from tests.support.broken_fastpath import BREAK_IN_AGENT
from tests.support.checksum import file_disk_checksum
from tests.support.kube import kubectl, kubectl_json
from tests.support.owners import create_owner
from tests.support.polling import wait_for

from vmresize.agent.transfer.keys import generate_key, public_openssh
from vmresize.api import naming
from vmresize.api.hosttask import TaskAction
from vmresize.api.meta import API_VERSION

WAIT = 90.0  # generous bound on a loaded 2-core machine; not a performance assertion


def host_doc(kubeconfig: Path, name: str) -> dict[str, Any] | None:
    return kubectl_json(kubeconfig, "get", "hosts.vmresize.io", name)


def delete_host(kubeconfig: Path, name: str) -> None:
    kubectl(kubeconfig, "delete", "hosts.vmresize.io", name, "--ignore-not-found",
            "--wait=false", check=False)


@pytest.fixture
def agent_factory(kubeconfig: Path, namespace: str,
                  tmp_path: Path) -> Iterator[Any]:
    """Make agent processes (test:///default); stops them and deletes their Hosts."""
    key = write_migration_key(tmp_path / "migration_key")
    made: list[AgentProcess] = []

    def make(address: str, *, embedded: bool = False,
             prelude: str | None = None) -> AgentProcess:
        name = f"h-{uuid.uuid4().hex[:8]}"
        agent = AgentProcess(name=name, workdir=tmp_path / name, address=address,
                             kubeconfig=kubeconfig, namespace=namespace, key_file=key,
                             embedded=embedded, prelude=prelude)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()
        delete_host(kubeconfig, agent.name)


def wait_ready(agent: AgentProcess, kubeconfig: Path, *, ready: bool = True) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        if ready and not agent.alive():
            raise AssertionError(f"agent exited:\n{agent.log_tail()}")
        doc = host_doc(kubeconfig, agent.name)
        if doc and doc.get("status", {}).get("ready") is ready:
            return doc
        return None
    return wait_for(check, timeout=WAIT, what=f"Host {agent.name} ready={ready}")


def create_task(kubeconfig: Path, namespace: str, host_label: str, spec: dict[str, Any],
                *, owner_names: str | None = "self") -> str:
    """A HostTask; its owner names it in its status unless ``owner_names`` says otherwise."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    owner, uid = create_owner(kubeconfig, namespace, str(spec.get("action")),
                              name if owner_names == "self" else owner_names).split()
    body = {"apiVersion": API_VERSION, "kind": "HostTask",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {naming.HOST_LABEL: host_label}},
            "spec": {"owner": f"{namespace}/{owner}", "ownerUid": uid,
                     "instance": f"{namespace}/vm", **spec}}
    import json
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(body))
    return name


def wait_task(kubeconfig: Path, namespace: str, name: str, agent: AgentProcess
              ) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        doc = kubectl_json(kubeconfig, "-n", namespace, "get", "hosttasks.vmresize.io", name)
        phase = (doc or {}).get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return doc
        return None
    try:
        return wait_for(done, timeout=WAIT, what=f"HostTask {name} to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}\nagent log:\n{agent.log_tail()}") from None


def run_task(kubeconfig: Path, namespace: str, agent: AgentProcess, **spec: Any
             ) -> dict[str, Any]:
    name = create_task(kubeconfig, namespace, agent.name, {"host": agent.name, **spec})
    doc = wait_task(kubeconfig, namespace, name, agent)
    status: dict[str, Any] = doc["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{agent.log_tail()}"
    assert status["attempt"] >= 1
    return status


def sha256(path: Path) -> str:
    """The disk checksum the agents report (an independent implementation)."""
    return file_disk_checksum(path)


def test_registration_heartbeat_and_admin_disable_survive_restarts(
        agent_factory: Any, kubeconfig: Path) -> None:
    agent: AgentProcess = agent_factory("127.0.0.2").start()
    doc = wait_ready(agent, kubeconfig)
    st = doc["status"]
    assert doc["spec"]["enabled"] is True
    assert st["migrationEndpoint"] == {"address": "127.0.0.2", "port": agent.port}
    host_pub = (agent.workdir / "state" / "ssh_host_ed25519_key.pub").read_text().strip()
    assert st["hostKey"] == host_pub
    assert st["capacity"]["vcpus"] > 0
    assert st["capacity"]["memoryMiB"] > 0
    assert st["capacity"]["diskGiB"] > 0
    assert st["hypervisor"] == "test:///default"
    assert st["storageRoot"] == str(agent.storage_root.resolve())
    assert [c["status"] for c in st["conditions"] if c["type"] == "Ready"] == ["True"]
    first = st["heartbeat"]
    wait_for(lambda: (host_doc(kubeconfig, agent.name) or {}).get("status", {})
             .get("heartbeat") != first, timeout=WAIT, what="a newer heartbeat")

    kubectl(kubeconfig, "patch", "hosts.vmresize.io", agent.name, "--type=merge", "-p",
            '{"spec":{"enabled":false,"disabledReason":"maintenance"}}')
    assert agent.stop() == 0
    stopped = wait_ready(agent, kubeconfig, ready=False)
    assert {c["type"]: c["reason"] for c in stopped["status"]["conditions"]} == {
        "Ready": "AgentStopped", "TransferFastPath": "SelfTestPassed"}

    agent.start()
    again = wait_ready(agent, kubeconfig)
    assert again["spec"]["enabled"] is False
    assert again["spec"]["disabledReason"] == "maintenance"
    assert again["status"]["hostKey"] == host_pub  # the host key is kept across restarts


def test_agent_runs_spawn_and_refuses_other_hosts_tasks(
        agent_factory: Any, kubeconfig: Path, namespace: str) -> None:
    agent: AgentProcess = agent_factory("127.0.0.2").start()
    wait_ready(agent, kubeconfig)
    rel = naming.disk_path(namespace, "vm", "1234abcd")
    status = run_task(kubeconfig, namespace, agent, action=TaskAction.SPAWN.value,
                      domainName=naming.domain_name(namespace, "vm"), diskPath=rel,
                      flavor={"vcpus": 1, "memoryMiB": 64, "diskGiB": 1},
                      seedPattern="hello")
    assert status["result"]["powerState"] == "Running"
    assert status["result"]["diskGiB"] == 1
    assert (agent.storage_root / rel).is_file()

    # Labelled for this agent, but the spec names another host: refused, not retryable.
    name = create_task(kubeconfig, namespace, agent.name,
                       {"host": "someone-else", "action": TaskAction.DESTROY.value,
                        "diskPath": rel})
    refused = wait_task(kubeconfig, namespace, name, agent)["status"]
    assert refused["phase"] == "Failed"
    assert refused["retryable"] is False
    assert (agent.storage_root / rel).is_file()


@pytest.mark.parametrize("path", ["fast", "stock"])
def test_two_agents_resize_over_ssh_then_confirm(
        agent_factory: Any, kubeconfig: Path, namespace: str, path: str) -> None:
    """``stock``: both agents' fast path broken as cryptography 51 broke it; each fails its
    self-test at startup, says so on its Host and in its metric, and the resize moves the
    disk on asyncssh's own path."""
    prelude = BREAK_IN_AGENT if path == "stock" else None
    src: AgentProcess = agent_factory("127.0.0.2", prelude=prelude).start()
    dst: AgentProcess = agent_factory("127.0.0.3", prelude=prelude).start()
    for agent in (src, dst):
        cond = next(c for c in wait_ready(agent, kubeconfig)["status"]["conditions"]
                    if c["type"] == "TransferFastPath")
        expected = (("True", "SelfTestPassed") if path == "fast" else
                    ("False", "SelfTestFailed"))
        assert (cond["status"], cond["reason"]) == expected, cond
        assert scrape(agent)[("vmresize_agent_transfer_fast_path",
                              (("reason", expected[1]),))] == (path == "fast")
    dst_host = wait_ready(dst, kubeconfig)["status"]
    dom, new_dom = (naming.domain_name(namespace, "vm"),
                    naming.domain_name(namespace, "vm", "r1"))
    rel = naming.disk_path(namespace, "vm", "aaaa1111")
    new_rel = naming.disk_path(namespace, "vm", "bbbb2222")
    spawned = run_task(kubeconfig, namespace, src, action="Spawn", domainName=dom,
                       diskPath=rel, seedPattern="resize me",
                       flavor={"vcpus": 1, "memoryMiB": 64, "diskGiB": 1})
    tid = f"xfer-{uuid.uuid4().hex[:8]}"
    run_task(kubeconfig, namespace, dst, action="Prepare", diskPath=new_rel, transferId=tid,
             expectedBytes=spawned["result"]["diskGiB"] * 1024**3)  # the operator's bound
    sent = run_task(kubeconfig, namespace, src, action="MigrateDisk", domainName=dom,
                    diskPath=rel, transferId=tid, powerOffTimeoutSeconds=2,
                    peer={"name": dst.name, "address": "127.0.0.3",
                          "port": dst_host["migrationEndpoint"]["port"],
                          "hostKey": dst_host["hostKey"]})
    checksum = sent["result"]["checksum"]
    assert sent["result"]["powerState"] == "Shutoff"
    assert sent["progress"]["bytesDone"] == sent["progress"]["bytesTotal"]
    assert sha256(src.storage_root / rel) == checksum
    assert sha256(dst.storage_root / new_rel) == checksum  # before Finish grows it
    done = run_task(kubeconfig, namespace, dst, action="Finish", domainName=new_dom,
                    diskPath=new_rel, expectedChecksum=checksum, transferId=tid,
                    flavor={"vcpus": 2, "memoryMiB": 128, "diskGiB": 2})
    assert (done["result"]["vcpus"], done["result"]["memoryMiB"],
            done["result"]["diskGiB"]) == (2, 128, 2)
    assert done["result"]["powerState"] == "Running"
    run_task(kubeconfig, namespace, src, action="Confirm", domainName=dom, diskPath=rel)
    assert not (src.storage_root / rel).exists()
    assert (dst.storage_root / new_rel).is_file()


def scrape(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The agent's /metrics over HTTP: value by (sample name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{agent.address}:{agent.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_agents_serve_metrics_that_steps_change(
        agent_factory: Any, kubeconfig: Path, namespace: str) -> None:
    src: AgentProcess = agent_factory("127.0.0.2").start()
    dst: AgentProcess = agent_factory("127.0.0.3").start()
    wait_ready(src, kubeconfig)
    dst_host = wait_ready(dst, kubeconfig)["status"]
    before = scrape(src)
    sent_key = ("vmresize_agent_transfer_bytes_total", (("direction", "sent"),))
    assert before.get(sent_key, 0.0) == 0.0
    assert before[("vmresize_agent_transfer_rate_bytes_per_second", ())] == 0.0

    dom, rel = naming.domain_name(namespace, "vm"), naming.disk_path(namespace, "vm", "m1m1m1m1")
    new_rel = naming.disk_path(namespace, "vm", "m2m2m2m2")
    run_task(kubeconfig, namespace, src, action="Spawn", domainName=dom, diskPath=rel,
             seedPattern="count my bytes", flavor={"vcpus": 1, "memoryMiB": 64, "diskGiB": 1})
    tid = f"xfer-{uuid.uuid4().hex[:8]}"
    run_task(kubeconfig, namespace, dst, action="Prepare", diskPath=new_rel, transferId=tid,
             expectedBytes=1024**3)
    run_task(kubeconfig, namespace, src, action="MigrateDisk", domainName=dom, diskPath=rel,
             transferId=tid, powerOffTimeoutSeconds=2,
             peer={"name": dst.name, "address": "127.0.0.3",
                   "port": dst_host["migrationEndpoint"]["port"],
                   "hostKey": dst_host["hostKey"]})
    # A step the executor refuses: Spawn without a flavor.
    name = create_task(kubeconfig, namespace, src.name, {
        "host": src.name, "action": "Spawn", "domainName": dom, "diskPath": rel})
    assert wait_task(kubeconfig, namespace, name, src)["status"]["phase"] == "Failed"

    after, received = scrape(src), scrape(dst)
    sent = after[sent_key]
    assert sent > 0
    # Every data byte the source put on the wire was written by the destination.
    assert received[("vmresize_agent_transfer_bytes_total", (("direction", "received"),))] \
        == sent

    def count(doc: dict[Any, float], action: str, outcome: str) -> float:
        return doc.get(("vmresize_agent_step_duration_seconds_count",
                        (("action", action), ("outcome", outcome))), 0.0)
    assert count(after, "Spawn", "succeeded") == 1
    assert count(after, "MigrateDisk", "succeeded") == 1
    assert count(after, "Spawn", "failed") == 1
    assert count(received, "Prepare", "succeeded") == 1
    assert after[("vmresize_agent_errors_total", (("reason", "TaskRefusedError"),))] == 1
    assert after[("vmresize_agent_tasks_in_flight", (("action", "MigrateDisk"),))] == 0
    assert after[("vmresize_agent_transfer_rate_bytes_per_second", ())] == 0.0


def test_restarted_agent_resumes_a_task_left_running(
        agent_factory: Any, kubeconfig: Path, namespace: str) -> None:
    agent: AgentProcess = agent_factory("127.0.0.2").start()
    wait_ready(agent, kubeconfig)
    agent.kill()  # kill -9: the Host stays ready=true, nothing is cleaned up
    rel = naming.disk_path(namespace, "vm", "5678cdef")
    name = create_task(kubeconfig, namespace, agent.name,
                       {"host": agent.name, "action": "Spawn", "diskPath": rel,
                        "domainName": naming.domain_name(namespace, "vm"),
                        "flavor": {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1}})
    # What the killed agent would have left: attempt 1 Running, nobody working on it.
    kubectl(kubeconfig, "-n", namespace, "patch", "hosttasks.vmresize.io", name,
            "--subresource=status", "--type=merge", "-p",
            '{"status":{"phase":"Running","attempt":1,"message":"copying"}}')
    agent.start()
    status = wait_task(kubeconfig, namespace, name, agent)["status"]
    assert status["phase"] == "Succeeded"
    assert status["attempt"] == 2
    assert (agent.storage_root / rel).is_file()


def test_a_deleted_host_is_registered_again_by_the_heartbeat(
        agent_factory: Any, kubeconfig: Path) -> None:
    agent: AgentProcess = agent_factory("127.0.0.2").start()
    first = wait_ready(agent, kubeconfig)
    kubectl(kubeconfig, "delete", "hosts.vmresize.io", agent.name)
    again = wait_ready(agent, kubeconfig)
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert again["spec"]["enabled"] is True


def test_clean_stop_mid_step_leaves_it_running_for_the_next_attempt(
        agent_factory: Any, kubeconfig: Path, namespace: str) -> None:
    agent: AgentProcess = agent_factory("127.0.0.2").start()
    wait_ready(agent, kubeconfig)
    dom, rel = naming.domain_name(namespace, "vm"), naming.disk_path(namespace, "vm", "9a9a9a9a")
    run_task(kubeconfig, namespace, agent, action="Spawn", domainName=dom, diskPath=rel,
             flavor={"vcpus": 1, "memoryMiB": 64, "diskGiB": 1})
    # Nobody listens at the peer: the sender keeps reconnecting (a long step).
    name = create_task(kubeconfig, namespace, agent.name, {
        "host": agent.name, "action": "MigrateDisk", "domainName": dom, "diskPath": rel,
        "transferId": "x1", "peer": {"name": "gone", "address": "127.0.0.9", "port": 9,
                                     "hostKey": public_openssh(generate_key())}})
    wait_for(lambda: (kubectl_json(kubeconfig, "-n", namespace, "get",
                                   "hosttasks.vmresize.io", name) or {})
             .get("status", {}).get("phase") == "Running", timeout=WAIT,
             what="MigrateDisk running")
    assert agent.stop() == 0
    wait_ready(agent, kubeconfig, ready=False)
    doc = kubectl_json(kubeconfig, "-n", namespace, "get", "hosttasks.vmresize.io", name)
    assert doc is not None
    assert doc["status"]["phase"] == "Running"  # left for the next agent to resume
    assert doc["status"]["attempt"] == 1
    agent.start()  # the next agent picks it up as attempt 2
    resumed = wait_task(kubeconfig, namespace, name, agent)["status"]
    assert resumed["attempt"] == 2
    # Attempt 1 powered the VM off and held it (its definition set aside next to the disk),
    # so attempt 2 resumes the send without the domain; nobody listens, so it ends failed
    # after its reconnects, as a retryable failure.
    assert (agent.storage_root / (rel + ".held.xml")).is_file()
    assert resumed["phase"] == "Failed"
    assert "127.0.0.9" in resumed["message"]
    assert resumed["retryable"] is True


def test_agent_refuses_a_destructive_step_its_owner_no_longer_names(
        agent_factory: Any, kubeconfig: Path, namespace: str) -> None:
    agent: AgentProcess = agent_factory("127.0.0.2").start()
    wait_ready(agent, kubeconfig)
    dom, rel = naming.domain_name(namespace, "vm"), naming.disk_path(namespace, "vm", "f3f3f3f3")
    spawned = run_task(kubeconfig, namespace, agent, action="Spawn", domainName=dom,
                       diskPath=rel, flavor={"vcpus": 1, "memoryMiB": 64, "diskGiB": 1})
    assert spawned["heartbeat"]  # a running step keeps status.heartbeat fresh
    # The owner's status names another task (its decision moved on): Destroy is fenced.
    name = create_task(kubeconfig, namespace, agent.name,
                       {"host": agent.name, "action": "Destroy", "domainName": dom,
                        "diskPath": rel}, owner_names="another-task")
    refused = wait_task(kubeconfig, namespace, name, agent)["status"]
    assert refused["phase"] == "Failed"
    assert refused["retryable"] is False
    assert "fenced: the owner no longer asks for this step" in refused["message"]
    assert (agent.storage_root / rel).is_file()
    run_task(kubeconfig, namespace, agent, action="Destroy", domainName=dom, diskPath=rel)
    assert not (agent.storage_root / rel).exists()


def test_a_running_step_keeps_its_heartbeat_fresh(
        agent_factory: Any, kubeconfig: Path, namespace: str) -> None:
    agent: AgentProcess = agent_factory("127.0.0.2").start()
    wait_ready(agent, kubeconfig)
    dom, rel = naming.domain_name(namespace, "vm"), naming.disk_path(namespace, "vm", "e4e4e4e4")
    run_task(kubeconfig, namespace, agent, action="Spawn", domainName=dom, diskPath=rel,
             flavor={"vcpus": 1, "memoryMiB": 64, "diskGiB": 1})
    # Nobody listens at the peer: the sender keeps reconnecting (a long step).
    name = create_task(kubeconfig, namespace, agent.name, {
        "host": agent.name, "action": "MigrateDisk", "domainName": dom, "diskPath": rel,
        "transferId": "x2", "peer": {"name": "gone", "address": "127.0.0.9", "port": 9,
                                     "hostKey": public_openssh(generate_key())}})

    def beat() -> str | None:
        st = (kubectl_json(kubeconfig, "-n", namespace, "get", "hosttasks.vmresize.io",
                           name) or {}).get("status", {})
        return st.get("heartbeat") if st.get("phase") == "Running" else None
    first = wait_for(beat, timeout=WAIT, what="a running MigrateDisk with a heartbeat")
    wait_for(lambda: (b := beat()) is not None and b != first, timeout=WAIT,
             what="a newer task heartbeat while the step runs")
