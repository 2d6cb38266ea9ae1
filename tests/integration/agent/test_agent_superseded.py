"""A step the owner has given up on (the operator's step watchdog moved on while this agent
was frozen) is never started, and a running one is cancelled at its next heartbeat, before
the owner's next step on this host runs. Real agent process, real kube-apiserver."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.agent_harness import AgentProcess, write_migration_key
from tests.support.kube import kubectl, kubectl_json
from tests.support.owners import create_owner
from tests.support.polling import wait_for

from vmresize.agent.transfer.keys import generate_key, public_openssh
from vmresize.api import naming
from vmresize.api.meta import API_VERSION

WAIT = 90.0  # a bound on a loaded 2-core machine, not a performance goal


@pytest.fixture
def agent(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(name=f"h-{uuid.uuid4().hex[:8]}", workdir=tmp_path / "a",
                     address="127.0.0.2", kubeconfig=kubeconfig, namespace=namespace,
                     key_file=write_migration_key(tmp_path / "key")).start()
    yield a
    a.stop()
    kubectl(kubeconfig, "delete", "hosts.vmresize.io", a.name, "--ignore-not-found",
            "--wait=false", check=False)


def _task(kubeconfig: Path, ns: str, agent: AgentProcess, spec: dict[str, Any],
          owner: tuple[str, str] | None = None, names: str | None = "self") -> tuple[str, str, str]:
    """Create a HostTask (and its owner unless given); returns (task, owner, uid)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    named = name if names == "self" else names
    if owner is None:  # a new owner naming ``named`` (a VMResize, or an Instance for Spawn)
        made = create_owner(kubeconfig, ns, spec["action"], named).split()
        owner = (made[0], made[1])
    else:  # the operator's next decision, recorded before its task is created
        _name_task(kubeconfig, ns, owner[0], named)
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps({
        "apiVersion": API_VERSION, "kind": "HostTask",
        "metadata": {"name": name, "namespace": ns, "labels": {naming.HOST_LABEL: agent.name}},
        "spec": {"host": agent.name, "owner": f"{ns}/{owner[0]}", "ownerUid": owner[1],
                 "instance": f"{ns}/vm", **spec}}))
    return name, owner[0], owner[1]


def _name_task(kubeconfig: Path, ns: str, owner: str, task: str | None) -> None:
    kubectl(kubeconfig, "-n", ns, "patch", "vmresizes.vmresize.io", owner,
            "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"currentTask": task}}))


def _status(kubeconfig: Path, ns: str, name: str) -> dict[str, Any]:
    doc = kubectl_json(kubeconfig, "-n", ns, "get", "hosttasks.vmresize.io", name) or {}
    return dict(doc.get("status") or {})


def _ended(kubeconfig: Path, ns: str, name: str, agent: AgentProcess) -> dict[str, Any]:
    try:
        return wait_for(lambda: (s := _status(kubeconfig, ns, name)).get("phase") in (
            "Succeeded", "Failed") and s, timeout=WAIT, what=f"{name} ended")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{agent.log_tail()}") from None


def test_superseded_steps_are_dropped_and_the_next_one_runs(
        agent: AgentProcess, kubeconfig: Path, namespace: str) -> None:
    ns = namespace
    dom, rel = naming.domain_name(ns, "vm"), naming.disk_path(ns, "vm", "c0c0c0c0")
    peer = {"name": "gone", "address": "127.0.0.9", "port": 9,
            "hostKey": public_openssh(generate_key())}
    spawn, _, _ = _task(kubeconfig, ns, agent, {"action": "Spawn", "domainName": dom,
                                                "diskPath": rel, "flavor": {
                                                    "vcpus": 1, "memoryMiB": 64, "diskGiB": 1}})
    assert _ended(kubeconfig, ns, spawn, agent)["phase"] == "Succeeded"
    move = {"action": "MigrateDisk", "domainName": dom, "diskPath": rel, "peer": peer}
    # Never started: the owner already names another task (no power-off, nothing held).
    stale, _, _ = _task(kubeconfig, ns, agent, {**move, "transferId": "s1"},
                        names="a-newer-task")
    done = _ended(kubeconfig, ns, stale, agent)
    assert (done["phase"], done["retryable"]) == ("Failed", False), done
    assert done["message"].startswith("superseded:"), done
    assert not (agent.storage_root / (rel + ".held.xml")).exists()
    # Running (nobody listens at the peer: a long step), then the owner moves on.
    running, owner, uid = _task(kubeconfig, ns, agent, {**move, "transferId": "s2"})
    wait_for(lambda: _status(kubeconfig, ns, running).get("phase") == "Running",
             timeout=WAIT, what="MigrateDisk running")
    nxt, _, _ = _task(kubeconfig, ns, agent, {"action": "RestoreSource", "domainName": dom,
                                              "diskPath": rel}, owner=(owner, uid))
    done = _ended(kubeconfig, ns, running, agent)
    assert done["phase"] == "Failed", done
    assert "superseded while running" in done["message"], done
    after = _ended(kubeconfig, ns, nxt, agent)
    assert after["phase"] == "Succeeded", f"{after}\n{agent.log_tail()}"
    assert after["startedAt"] >= done["finishedAt"], "the next step waited for the first"
