"""The real operator and the real agent, each with nothing but the chart's RBAC.

One release of deploy/helm/vmresize per module (the ``release`` fixture). Each process
runs locally (the local control plane has no kubelet) with a token of the chart's
ServiceAccount, and neither may log a single 403. A whole resize with both is in
test_rbac_resize.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.support import REPO
from tests.support.chart import Release, token_kubeconfig
from tests.support.kube import kubectl, kubectl_json
from tests.support.op_harness import Fulfiller, Operator, World
from tests.support.polling import wait_for

from vmresize.api.meta import API_VERSION

# A 403 status in a log line: not digits in a port (40365), a UID or a log timestamp (,403]).
HTTP_403 = re.compile(r"(?<![\w.:,-])403(?!\w)")

WAIT = 90.0  # a generous bound on a loaded machine, not a timing test


def test_real_operator_runs_a_resize_with_the_chart_rbac(release: Release, api_client: Any,
                                                         tmp_path: Path) -> None:
    """The operator process, cluster-wide as the Deployment runs it, authenticated only by
    a token of the chart's operator ServiceAccount, takes a resize to Confirmed. The
    operator tests' harness plays the agents (as admin) and makes the Flavors and Hosts."""
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
    assert not HTTP_403.search(log), op.tail()


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
            f"--kubeconfig={config}", "--heartbeat-seconds=2", "--metrics-port=0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")
            host = kubectl_json(admin, "get", "hosts.vmresize.io", own) or {}
            return bool(host.get("status", {}).get("ready"))
        wait_for(ready, timeout=WAIT, what=f"Host {own} ready", interval=0.3)

        task = f"spawn-{uuid.uuid4().hex[:8]}"
        kubectl(admin, "create", "-f", "-", stdin=json.dumps({
            "apiVersion": API_VERSION, "kind": "HostTask",
            "metadata": {"name": task, "namespace": ns, "labels": {naming.HOST_LABEL: own}},
            "spec": {"host": own, "action": "Spawn", "owner": f"{ns}/r", "instance": f"{ns}/vm",
                     "domainName": naming.domain_name(ns, "vm"),
                     "diskPath": naming.disk_path(ns, "vm", "1234abcd"),
                     "flavor": {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1}}}))

        def finished() -> dict[str, Any] | None:
            doc = kubectl_json(admin, "get", "hosttasks.vmresize.io", task, "-n", ns) or {}
            status: dict[str, Any] = doc.get("status") or {}
            return status if status.get("phase") in ("Succeeded", "Failed") else None
        status = wait_for(finished, timeout=WAIT, what=f"HostTask {task} to finish",
                          interval=0.3)
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
    assert not HTTP_403.search(text), text[-4000:]
