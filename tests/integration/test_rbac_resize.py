"""A whole resize with nothing but the chart's RBAC: the real operator and a real agent.

One release of deploy/helm/vmresize is installed (the ``release`` fixture, its own release
for this module). Then, as local processes (the local control plane has no
kubelet), the operator runs cluster-wide as the chart's Deployment runs it, with a token of
the chart's operator ServiceAccount, and one agent runs with a Node-bound token of the
chart's agent ServiceAccount (so the agent-host-scope admission policy applies to every
write it makes) and the migration key it read from the chart's Secret. The operator allows
resizing to the same host, so the one agent (libvirt test:///default) plays source and
destination: Spawn, Prepare, MigrateDisk to itself over its own SSH service on 127.0.0.x,
Finish, Confirm. A tenant's Instance is resized to a bigger flavor and confirmed, and
neither process may have logged a single 403.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.agent_harness import AgentProcess
from tests.support.chart import HOST, Release, eventually, token_kubeconfig
from tests.support.kube import kubectl, kubectl_json
from tests.support.op_harness import Operator
from tests.support.polling import wait_for

from vmresize.api.meta import API_VERSION, GROUP

WAIT = 120.0  # a bound on a loaded 2-core machine, not a performance assertion
ADDRESS = "127.0.0.5"  # the agent's migration service; its port is picked free
SMALL = {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1}
BIG = {"vcpus": 2, "memoryMiB": 128, "diskGiB": 2}


@pytest.fixture
def node(release: Release) -> Iterator[str]:
    """A Node object (no kubelet) the agent's token is bound to; it names the Host too."""
    name = f"hv-{uuid.uuid4().hex[:6]}"
    kubectl(release.config, "create", "-f", "-",
            stdin=f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n")
    yield name
    kubectl(release.config, "delete", "node", name, "--wait=false", check=False)


def sa_kubeconfig(release: Release, sa: str, path: Path, *extra: str) -> Path:
    """A kubeconfig holding only a fresh token of the release's ServiceAccount ``sa``."""
    token = kubectl(release.config, "create", "token", sa, "-n", release.namespace,
                    "--duration=30m", *extra).stdout.strip()
    return token_kubeconfig(release.config, token, path)


def status(config: Path, *args: str) -> dict[str, Any]:
    got: dict[str, Any] = (kubectl_json(config, "get", *args) or {}).get("status") or {}
    return got


def no_forbidden(name: str, log: Path) -> None:
    """No 403 at all, not even one retried: kopf logs a refused request as
    ``APIForbiddenError`` (retried), or "Not enough permissions to ..." (watch given up)."""
    text = log.read_text(errors="replace")
    for needle in ("forbidden", "permission"):
        assert needle not in text.lower(), f"{name} logged {needle!r}:\n{text[-6000:]}"
    # A 403 status: not digits in a port (40365), a UID or a log timestamp (,403]).
    assert not re.search(r"(?<![\w.:,-])403(?!\w)", text), f"{name} logged a 403:\n{text[-6000:]}"


def strip_and_delete(config: Path, kind: str, name: str, *ns: str) -> None:
    """Delete an object whose finalizers no process will remove any more."""
    kubectl(config, "patch", kind, name, *ns, "--type=merge", "-p",
            '{"metadata":{"finalizers":null}}', check=False)
    kubectl(config, "delete", kind, name, *ns, "--ignore-not-found", "--wait=false",
            check=False)


def test_chart_rbac_is_enough_for_a_real_resize(release: Release, node: str, namespace: str,
                                               tmp_path: Path) -> None:
    admin, ns, tenant = release.config, release.namespace, namespace
    agent_config = sa_kubeconfig(release, release.agent, tmp_path / "agent.kubeconfig",
                                 "--bound-object-kind=Node", f"--bound-object-name={node}")
    operator_config = sa_kubeconfig(release, release.operator, tmp_path / "operator.kubeconfig")
    key = tmp_path / "id_ed25519"
    key.write_bytes(base64.b64decode(kubectl(
        agent_config, "get", "secret", release.key_secret, "-n", ns, "-o",
        "jsonpath={.data.id_ed25519}").stdout))
    key.chmod(0o600)
    # The agent-host-scope policy is in force for this token before the agent writes
    # anything: every write the agent makes below passes through it.
    other = f"hv-other-{uuid.uuid4().hex[:6]}"
    denied = eventually(
        lambda: kubectl(agent_config, "create", "-f", "-", check=False,
                        stdin=HOST.format(name=other)),
        lambda r: r.returncode != 0 and "agent-host-scope" in r.stderr)
    assert "agent-host-scope" in denied.stderr, denied.stderr

    # Flavors only this test's Host serves (Nova's aggregate extra spec; the admin labels
    # the Host), so Hosts other tests left in the session cluster are never chosen.
    label = f"{GROUP}/rbac-{uuid.uuid4().hex[:8]}"
    small, big = f"{tenant}-small", f"{tenant}-big"
    for name, size in ((small, SMALL), (big, BIG)):
        kubectl(admin, "create", "-f", "-", stdin=json.dumps({
            "apiVersion": API_VERSION, "kind": "Flavor", "metadata": {"name": name},
            "spec": {**size, "extraSpecs": {f"aggregate_instance_extra_specs:{label}": "yes"}}}))

    agent = AgentProcess(name=node, workdir=tmp_path / "agent", address=ADDRESS,
                         kubeconfig=agent_config, namespace=ns, key_file=key,
                         stop_vms_on_exit=True)
    operator = Operator(operator_config, ns, tmp_path / "operator.log",
                        [sys.executable, "-m", "vmresize.operator", "--standalone"],
                        VMRESIZE_NAMESPACE=ns, VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST="true",
                        VMRESIZE_POWER_OFF_TIMEOUT_SECONDS="1")
    try:
        agent.start()

        def registered() -> dict[str, Any] | None:
            assert agent.alive(), agent.log_tail()
            st = status(admin, "hosts.vmresize.io", node)
            return st if st.get("ready") and st.get("hostKey") else None
        host = wait_for(registered, timeout=WAIT, what=f"Host {node} ready")
        assert host["migrationEndpoint"]["address"] == ADDRESS
        kubectl(admin, "label", "hosts.vmresize.io", node, f"{label}=yes")
        operator.start()

        def phase(kind: str, name: str, *want: str) -> dict[str, Any]:
            def probe() -> dict[str, Any] | None:
                assert agent.alive(), agent.log_tail()
                assert operator.proc is not None
                assert operator.proc.poll() is None, operator.tail()
                st = status(admin, kind, name, "-n", tenant)
                return st if st.get("phase") in want else None
            try:
                got: dict[str, Any] = wait_for(probe, timeout=WAIT, what=f"{kind} {name} {want}")
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- operator:\n{operator.tail()}\n--- agent:\n"
                                     f"{agent.log_tail(60)}") from None
            return got

        # The tenant's objects (the admin kubeconfig stands in for the tenant here).
        kubectl(admin, "create", "-n", tenant, "-f", "-", stdin=json.dumps({
            "apiVersion": API_VERSION, "kind": "Instance",
            "metadata": {"name": "vm1"}, "spec": {"flavor": small}}))
        active = phase("instances.vmresize.io", "vm1", "Active", "Error")
        assert active["phase"] == "Active", active
        assert (active["host"], active["flavor"], active["vcpus"]) == (node, small, 1)
        kubectl(admin, "create", "-n", tenant, "-f", "-", stdin=json.dumps({
            "apiVersion": API_VERSION, "kind": "VMResize",
            "metadata": {"name": "grow"}, "spec": {"instanceName": "vm1", "flavor": big}}))
        verify = phase("vmresizes.vmresize.io", "grow", "VerifyResize", "Error", "Failed")
        assert verify["phase"] == "VerifyResize", verify
        kubectl(admin, "patch", "vmresizes.vmresize.io", "grow", "-n", tenant, "--type=merge",
                "-p", '{"spec":{"confirm":true}}')
        done = phase("vmresizes.vmresize.io", "grow", "Confirmed", "Error", "Failed")
        assert done["phase"] == "Confirmed", done

        inst = status(admin, "instances.vmresize.io", "vm1", "-n", tenant)
        assert inst["phase"] == "Active"
        assert inst["host"] == node  # resized in place: the same host, a new domain and disk
        assert inst["flavor"] == big
        assert (inst["vcpus"], inst["memoryMiB"], inst["diskGiB"]) == (2, 128, 2)
        assert inst["domainName"] != active["domainName"]
        assert inst["diskPath"] != active["diskPath"]
        assert not (agent.storage_root / active["diskPath"]).exists()  # Confirm removed it
        assert (agent.storage_root / inst["diskPath"]).is_file()
        tasks = kubectl_json(admin, "get", "hosttasks.vmresize.io", "-n", ns) or {}
        actions = {t["spec"]["action"]: t["status"]["phase"] for t in tasks["items"]
                   if t["spec"]["instance"] == f"{tenant}/vm1"}
        assert actions == dict.fromkeys(
            ("Spawn", "Prepare", "MigrateDisk", "Finish", "Confirm"), "Succeeded"), actions
    finally:
        operator.stop()
        agent.stop()
        for kind, name in (("vmresizes.vmresize.io", "grow"), ("instances.vmresize.io", "vm1")):
            strip_and_delete(admin, kind, name, "-n", tenant)
        strip_and_delete(admin, "hosts.vmresize.io", node)
        kubectl(admin, "delete", "flavors.vmresize.io", small, big, "--ignore-not-found",
                "--wait=false", check=False)
    no_forbidden("the operator", operator.log)
    no_forbidden("the agent", agent.log_file)
