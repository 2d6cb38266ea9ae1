"""The chart's least-privilege RBAC and admission policies, on the real API server.

One release of deploy/helm/vmresize is installed into its own namespace of the session
cluster (crds.enabled=false: the session applied crds/ already). Then:

- ``kubectl auth can-i --as=<ServiceAccount>`` proves what each component may and may not do;
- real ServiceAccount tokens (TokenRequest, some bound to a Node object) write through the
  agent-host-scope ValidatingAdmissionPolicy;
- impersonated users create VMResizes with spec.targetHost against the forced-host policy.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster import ensure_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "vmresize"
TIMEOUT = 120
#: A new ValidatingAdmissionPolicy is enforced once the API server's informer has it,
#: usually within a second; wait at most this long for that.
POLICY_SYNC_SECONDS = 30.0


def kubectl(config: Path, *args: str, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl against ``config``, bounded; raises with its stderr when ``check``."""
    proc = subprocess.run(["kubectl", f"--kubeconfig={config}", *args], input=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    config: Path

    @property
    def agent(self) -> str:
        return f"{self.name}-vmresize-agent"

    @property
    def operator(self) -> str:
        return f"{self.name}-vmresize-operator"

    @property
    def key_secret(self) -> str:
        return f"{self.name}-vmresize-migration-key"

    def sa_user(self, sa: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{sa}"

    def can(self, sa: str, *args: str) -> bool:
        """``kubectl auth can-i`` as the ServiceAccount ``sa`` of this release."""
        proc = kubectl(self.config, "auth", "can-i", f"--as={self.sa_user(sa)}", *args,
                       check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stderr
        return answer == "yes"


@pytest.fixture(scope="module")
def release(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "c"), "HELM_CACHE_HOME": str(home / "k"),
           "HELM_DATA_HOME": str(home / "d")}
    helm = str(ensure_binaries() / "helm")
    rel = Release(f"r{uuid.uuid4().hex[:8]}", f"vmresize-{uuid.uuid4().hex[:8]}", kubeconfig)
    common = [f"--kubeconfig={kubeconfig}", "-n", rel.namespace]
    try:
        subprocess.run([helm, "install", rel.name, str(CHART), *common, "--create-namespace",
                        "--set", "crds.enabled=false", "--timeout", "60s"],
                       check=True, capture_output=True, text=True, env=env, timeout=TIMEOUT)
        yield rel
    finally:
        subprocess.run([helm, "uninstall", rel.name, *common, "--wait", "--timeout", "60s"],
                       capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False)
        kubectl(kubeconfig, "delete", "namespace", rel.namespace, "--wait=false", check=False)


def token_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the same server as ``admin`` that authenticates with ``token``."""
    view = json.loads(kubectl(admin, "config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = view["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data")
    if ca is None:
        ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cluster["server"],
                                               "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))
    return path


def eventually(attempt: Callable[[], subprocess.CompletedProcess[str]],
               done: Callable[[subprocess.CompletedProcess[str]], bool]
               ) -> subprocess.CompletedProcess[str]:
    """Repeat ``attempt`` until ``done`` (bounded by POLICY_SYNC_SECONDS); the last result."""
    deadline = time.monotonic() + POLICY_SYNC_SECONDS
    while True:
        result = attempt()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


# --- kubectl auth can-i ------------------------------------------------------------------


def test_agent_may_not_write_vmresizes_or_instances(release: Release) -> None:
    for verb in ("update", "patch", "create", "delete"):
        assert not release.can(release.agent, verb, "vmresizes.vmresize.io", "-A")
        assert not release.can(release.agent, verb, "instances.vmresize.io", "-A")
    assert not release.can(release.agent, "patch", "vmresizes.vmresize.io", "--subresource=status",
                           "-A")
    # The fence reads a task's owner before a destructive step: get, and nothing more.
    for kind in ("vmresizes.vmresize.io", "instances.vmresize.io"):
        assert release.can(release.agent, "get", kind, "-A")
        assert not release.can(release.agent, "list", kind, "-A")


def test_agent_reads_only_the_migration_key(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert release.can(release.agent, "get", f"secret/{release.key_secret}", *ns)
    assert not release.can(release.agent, "get", "secret/some-other-secret", *ns)
    assert not release.can(release.agent, "list", "secrets", *ns)
    assert not release.can(release.agent, "watch", "secrets", *ns)
    assert not release.can(release.agent, "get", f"secret/{release.key_secret}", "-n", "default")
    assert not release.can(release.agent, "update", f"secret/{release.key_secret}", *ns)


def test_agent_host_and_task_verbs(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert release.can(release.agent, "create", "hosts.vmresize.io")
    assert release.can(release.agent, "watch", "hosts.vmresize.io")
    assert release.can(release.agent, "patch", "hosts.vmresize.io", "--subresource=status")
    assert not release.can(release.agent, "delete", "hosts.vmresize.io")
    assert not release.can(release.agent, "update", "hosts.vmresize.io")
    assert release.can(release.agent, "watch", "hosttasks.vmresize.io", *ns)
    assert release.can(release.agent, "patch", "hosttasks.vmresize.io", "--subresource=status",
                       *ns)
    assert not release.can(release.agent, "create", "hosttasks.vmresize.io", *ns)
    assert not release.can(release.agent, "delete", "hosttasks.vmresize.io", *ns)
    assert not release.can(release.agent, "patch", "hosttasks.vmresize.io", "-n", "default")
    assert not release.can(release.agent, "create", "flavors.vmresize.io")


def test_operator_may_not_read_the_migration_key(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert not release.can(release.operator, "get", f"secret/{release.key_secret}", *ns)
    assert not release.can(release.operator, "list", "secrets", *ns)
    assert not release.can(release.operator, "list", "secrets", "-A")


def test_operator_drives_resizes_and_owns_hosttasks(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert release.can(release.operator, "patch", "vmresizes.vmresize.io", "--subresource=status",
                       "-A")
    assert release.can(release.operator, "patch", "instances.vmresize.io", "-A")
    assert release.can(release.operator, "patch", "hosts.vmresize.io", "--subresource=status")
    assert not release.can(release.operator, "delete", "hosts.vmresize.io")
    assert not release.can(release.operator, "create", "vmresizes.vmresize.io", "-A")
    for verb in ("create", "delete", "patch", "watch"):
        assert release.can(release.operator, verb, "hosttasks.vmresize.io", *ns)
    assert not release.can(release.operator, "create", "hosttasks.vmresize.io", "-n", "default")
    assert not release.can(release.operator, "patch", "hosttasks.vmresize.io", "-A")
    assert release.can(release.operator, "watch", "hosttasks.vmresize.io", "-A")  # kopf -A
    assert release.can(release.operator, "create", "events", "-n", "default")


# --- real tokens ---------------------------------------------------------------------------


def test_agent_token_reads_the_migration_key_and_nothing_else(release: Release,
                                                               tmp_path: Path) -> None:
    token = kubectl(release.config, "create", "token", release.agent, "-n", release.namespace,
                    "--duration=10m").stdout.strip()
    agent = token_kubeconfig(release.config, token, tmp_path / "agent.kubeconfig")
    got = kubectl(agent, "get", "secret", release.key_secret, "-n", release.namespace, "-o",
                  "jsonpath={.data.id_ed25519}").stdout
    assert base64.b64decode(got).startswith(b"-----BEGIN PRIVATE KEY-----")
    denied = kubectl(agent, "get", "secrets", "-n", release.namespace, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


HOST = """apiVersion: vmresize.io/v1alpha1
kind: Host
metadata:
  name: {name}
spec: {{}}
"""

TASK = """apiVersion: vmresize.io/v1alpha1
kind: HostTask
metadata:
  name: {name}
  namespace: {namespace}
spec:
  host: {host}
  action: Prepare
  owner: tenant/web-1-resize
  instance: tenant/web-1
"""


@pytest.fixture
def nodes(release: Release) -> Iterator[tuple[str, str]]:
    """Two Node objects (no kubelet: just API objects a token can be bound to)."""
    names = (f"hv-{uuid.uuid4().hex[:6]}", f"hv-{uuid.uuid4().hex[:6]}")
    for n in names:
        kubectl(release.config, "create", "-f", "-",
                stdin=f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n")
    yield names
    kubectl(release.config, "delete", "node", *names, "--wait=false", check=False)
    kubectl(release.config, "delete", "host", *names, "--ignore-not-found", "--wait=false",
            check=False)


def test_node_bound_agent_writes_only_its_own_host_and_tasks(
        release: Release, nodes: tuple[str, str], tmp_path: Path) -> None:
    own, other = nodes
    admin, ns = release.config, release.namespace
    token = kubectl(admin, "create", "token", release.agent, "-n", ns, "--duration=10m",
                    "--bound-object-kind=Node", f"--bound-object-name={own}").stdout.strip()
    agent = token_kubeconfig(admin, token, tmp_path / "agent.kubeconfig")
    whoami = json.loads(kubectl(agent, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"] == [own]

    # Registering another node's Host is denied by the policy (RBAC alone would allow it).
    denied = eventually(
        lambda: kubectl(agent, "create", "-f", "-", stdin=HOST.format(name=other), check=False),
        lambda r: r.returncode != 0 and "agent-host-scope" in r.stderr)
    assert denied.returncode != 0
    assert f'the agent on node "{own}" may not write Host "{other}"' in denied.stderr
    kubectl(agent, "create", "-f", "-", stdin=HOST.format(name=own))

    status = json.dumps({"status": {"ready": True}})
    kubectl(agent, "patch", "host", own, "--subresource=status", "--type=merge", "-p", status)
    kubectl(admin, "create", "-f", "-", stdin=HOST.format(name=other))
    denied = kubectl(agent, "patch", "host", other, "--subresource=status", "--type=merge",
                     "-p", status, check=False)
    assert denied.returncode != 0
    assert "agent-host-scope" in denied.stderr

    mine, theirs = f"t-{own}", f"t-{other}"
    for name, host in ((mine, own), (theirs, other)):
        kubectl(admin, "create", "-f", "-", stdin=TASK.format(name=name, namespace=ns, host=host))
    progress = json.dumps({"status": {"message": "working"}})
    kubectl(agent, "patch", "hosttask", mine, "-n", ns, "--subresource=status", "--type=merge",
            "-p", progress)
    denied = kubectl(agent, "patch", "hosttask", theirs, "-n", ns, "--subresource=status",
                     "--type=merge", "-p", progress, check=False)
    assert denied.returncode != 0
    assert f'may not write HostTask "{theirs}"' in denied.stderr
    message = kubectl(admin, "get", "hosttask", theirs, "-n", ns, "-o",
                      "jsonpath={.status.message}").stdout
    assert message != "working"

    # A token without a node binding carries no node name: the policy does not apply, and
    # only RBAC (and the agent's own check) stand. This is the documented limitation.
    unbound = token_kubeconfig(admin, kubectl(admin, "create", "token", release.agent, "-n", ns,
                                              "--duration=10m").stdout.strip(),
                               tmp_path / "unbound.kubeconfig")
    kubectl(unbound, "patch", "hosttask", theirs, "-n", ns, "--subresource=status",
            "--type=merge", "-p", progress)


# --- forced hosts --------------------------------------------------------------------------


FORCED = """apiVersion: vmresize.io/v1alpha1
kind: VMResize
metadata:
  name: {name}
  namespace: {namespace}
spec:
  instanceName: web-1
  flavor: m1.small
{extra}"""


@pytest.fixture
def tenant(release: Release, namespace: str) -> str:
    """``namespace``, where the user "alice" may create VMResizes (RBAC is not what denies)."""
    kubectl(release.config, "create", "role", "resizer", "-n", namespace,
            "--verb=create,get,list,patch,delete", "--resource=vmresizes.vmresize.io")
    kubectl(release.config, "create", "rolebinding", "alice-resizer", "-n", namespace,
            "--role=resizer", "--user=alice")
    return namespace


def test_forced_host_is_an_admins_act(release: Release, tenant: str) -> None:
    admin = release.config
    forced = FORCED.format(name="forced", namespace=tenant, extra="  targetHost: hv-2\n")
    as_alice = ("--as=alice", "--as-group=developers")

    denied = eventually(
        lambda: kubectl(admin, "create", "-f", "-", *as_alice, stdin=forced, check=False),
        lambda r: r.returncode != 0 and "forced-host" in r.stderr)
    assert denied.returncode != 0
    assert "ValidatingAdmissionPolicy" in denied.stderr
    assert 'user "alice" is not in the groups system:masters' in denied.stderr
    assert kubectl(admin, "get", "vmresize", "forced", "-n", tenant, check=False).returncode != 0

    # alice may create resizes that leave the host to the scheduler.
    plain = FORCED.format(name="plain", namespace=tenant, extra="")
    kubectl(admin, "create", "-f", "-", *as_alice, stdin=plain)

    # An admin (system:masters, the admin kubeconfig's group) may force a host.
    kubectl(admin, "create", "-f", "-", stdin=forced)
    got = kubectl(admin, "get", "vmresize", "forced", "-n", tenant, "-o",
                  "jsonpath={.spec.targetHost}").stdout
    assert got == "hv-2"
    # The policy guards CREATE only; the tenant still drives an admin-forced resize...
    kubectl(admin, "patch", "vmresize", "forced", "-n", tenant, *as_alice, "--type=merge",
            "-p", '{"spec":{"confirm":true}}')
    # ...and cannot force a host later: spec.targetHost is immutable, absence included.
    late = kubectl(admin, "patch", "vmresize", "plain", "-n", tenant, *as_alice,
                   "--type=merge", "-p", '{"spec":{"targetHost":"hv-2"}}', check=False)
    assert late.returncode != 0
    assert "targetHost is immutable" in late.stderr
    kubectl(admin, "delete", "vmresize", "forced", "plain", "-n", tenant, "--wait=false")


# --- the real operator, with nothing but the chart's operator ServiceAccount -------------------


def test_real_operator_runs_a_resize_with_the_chart_rbac(release: Release, api_client: Any,
                                                         tmp_path: Path) -> None:
    """The operator process, cluster-wide as the Deployment runs it, authenticated only by
    a token of the chart's operator ServiceAccount, takes a resize to Confirmed. The
    operator tests' harness plays the agents (as admin) and makes the Flavors and Hosts."""
    sys.path.insert(0, str(REPO / "tests" / "integration" / "operator"))
    from op_harness import Fulfiller, Operator, World

    token = kubectl(release.config, "create", "token", release.operator, "-n",
                    release.namespace, "--duration=30m").stdout.strip()
    config = token_kubeconfig(release.config, token, tmp_path / "operator.kubeconfig")
    world = World(api_client, release.namespace)
    op = Operator(config, release.namespace, tmp_path / "operator.log",
                  [sys.executable, "-m", "vmresize.operator", "--standalone"],
                  VMRESIZE_NAMESPACE=release.namespace)
    try:
        world.make_flavors()
        with Fulfiller(api_client, world.ns, world.hosts) as agents:
            op.start()
            world.make_host("a")
            world.make_host("b")
            world.instance("vm1", "small", host="a")
            world.resize("r1", "vm1", "medium")
            world.wait_phase("r1", "VerifyResize")
            world.patch_resize("r1", {"confirm": True})
            world.wait_phase("r1", "Confirmed")
            assert "MigrateDisk@" + world.host("a") in agents.actions()
    finally:
        op.stop()
        world.cleanup()
    log = (tmp_path / "operator.log").read_text(errors="replace")
    assert "Forbidden" not in log, op.tail()
    assert " 403" not in log, op.tail()


# --- the real agent, with nothing but the chart's agent ServiceAccount -------------------------


def _wait(what: str, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll ``probe`` until truthy; a generous bound on a loaded machine, not a timing test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _get(config: Path, *args: str) -> dict[str, Any] | None:
    proc = kubectl(config, "get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_real_agent_registers_and_runs_a_task_with_the_chart_rbac(
        release: Release, nodes: tuple[str, str], tmp_path: Path) -> None:
    """The agent process, with a node-bound token of the chart's agent ServiceAccount and
    the migration key it read from the chart's Secret, registers its Host (through the
    agent-host-scope policy) and runs a Spawn HostTask (libvirt test:///default)."""
    import socket

    from vmresize.api import naming

    own, _ = nodes
    admin, ns = release.config, release.namespace
    token = kubectl(admin, "create", "token", release.agent, "-n", ns, "--duration=30m",
                    "--bound-object-kind=Node", f"--bound-object-name={own}").stdout.strip()
    config = token_kubeconfig(admin, token, tmp_path / "agent.kubeconfig")
    key = tmp_path / "id_ed25519"
    key.write_bytes(base64.b64decode(kubectl(
        config, "get", "secret", release.key_secret, "-n", ns, "-o",
        "jsonpath={.data.id_ed25519}").stdout))
    key.chmod(0o600)
    address = "127.0.0.4"
    with socket.socket() as s:
        s.bind((address, 0))
        port = s.getsockname()[1]
    log = tmp_path / "agent.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(REPO / p) for p in ("api", "operator", "agent"))}
    argv = [sys.executable, "-m", "vmresize.agent", f"--host-name={own}",
            "--libvirt-uri=test:///default", f"--storage-root={tmp_path / 'storage'}",
            f"--state-dir={tmp_path / 'state'}", f"--migration-address={address}",
            f"--migration-port={port}", f"--migration-key-file={key}", f"--namespace={ns}",
            f"--kubeconfig={config}", "--heartbeat-seconds=2"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")
            host = _get(admin, "hosts.vmresize.io", own) or {}
            return bool(host.get("status", {}).get("ready"))
        _wait(f"Host {own} ready", ready)

        task = f"spawn-{uuid.uuid4().hex[:8]}"
        kubectl(admin, "create", "-f", "-", stdin=json.dumps({
            "apiVersion": "vmresize.io/v1alpha1", "kind": "HostTask",
            "metadata": {"name": task, "namespace": ns, "labels": {naming.HOST_LABEL: own}},
            "spec": {"host": own, "action": "Spawn", "owner": f"{ns}/r", "instance": f"{ns}/vm",
                     "domainName": naming.domain_name(ns, "vm"),
                     "diskPath": naming.disk_path(ns, "vm", "1234abcd"),
                     "flavor": {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1}}}))

        def finished() -> dict[str, Any] | None:
            doc = _get(admin, "hosttasks.vmresize.io", task, "-n", ns) or {}
            status: dict[str, Any] = doc.get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None
        status = _wait(f"HostTask {task} to finish", finished)
        assert status["phase"] == "Succeeded", log.read_text(errors="replace")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    text = log.read_text(errors="replace")
    assert "Forbidden" not in text, text[-4000:]
    assert " 403" not in text, text[-4000:]
