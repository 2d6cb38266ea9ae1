"""An agent older than the operator fails a task it cannot read at once, saying which two
versions differ (issue 18, finding 7): before, kopf retried the validation error forever
and the owner waited (for Finish, with the VM off). Real agent process, real kube-apiserver
whose HostTask CRD is a newer operator's: it has one more field in ``spec``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.agent_harness import AgentProcess, write_migration_key
from tests.support.kube import kubectl, kubectl_json
from tests.support.owners import create_owner
from tests.support.polling import wait_for

from vmresize.api import naming
from vmresize.api.meta import API_VERSION

WAIT = 60.0  # a bound on a loaded 2-core machine; without the refusal the task never ends
NEWER = "0.99.0"
FIELD = "fromANewerOperator"
PATH = f"/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/{FIELD}"


@pytest.fixture
def newer_crd(kubeconfig: Path) -> Iterator[None]:
    """The HostTask CRD with one more spec field, as a newer operator's chart installs it
    (without it the API server would prune the field before any agent saw it)."""
    crd = "customresourcedefinitions.apiextensions.k8s.io/hosttasks.vmresize.io"
    kubectl(kubeconfig, "patch", crd, "--type=json", "-p", json.dumps(
        [{"op": "add", "path": PATH, "value": {"type": "string"}}]))
    try:
        yield
    finally:
        kubectl(kubeconfig, "patch", crd, "--type=json", "-p", json.dumps(
            [{"op": "remove", "path": PATH}]))


@pytest.fixture
def agent(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(name=f"h-{uuid.uuid4().hex[:8]}", workdir=tmp_path / "a",
                     address="127.0.0.2", kubeconfig=kubeconfig, namespace=namespace,
                     key_file=write_migration_key(tmp_path / "key")).start()
    yield a
    a.stop()
    kubectl(kubeconfig, "delete", "hosts.vmresize.io", a.name, "--ignore-not-found",
            "--wait=false", check=False)


def test_a_task_with_a_newer_field_fails_at_once_naming_both_versions(
        newer_crd: None, agent: AgentProcess, kubeconfig: Path, namespace: str) -> None:
    ns, name = namespace, f"t-{uuid.uuid4().hex[:10]}"
    owner, uid = create_owner(kubeconfig, ns, "Finish", name).split()
    body = {
        "apiVersion": API_VERSION, "kind": "HostTask",
        "metadata": {"name": name, "namespace": ns, "labels": {naming.HOST_LABEL: agent.name},
                     "annotations": {naming.WRITER_ANNOTATION: NEWER}},
        "spec": {"host": agent.name, "owner": f"{ns}/{owner}", "ownerUid": uid,
                 "instance": f"{ns}/vm", "action": "Finish", FIELD: "something new"}}
    began = time.monotonic()
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(body))
    stored = kubectl_json(kubeconfig, "-n", ns, "get", "hosttasks.vmresize.io", name) or {}
    assert stored["spec"].get(FIELD) == "something new", "the API server pruned the field"

    def ended() -> dict[str, str] | None:
        doc = kubectl_json(kubeconfig, "-n", ns, "get", "hosttasks.vmresize.io", name) or {}
        st = doc.get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    try:
        st = wait_for(ended, timeout=WAIT, what=f"{name} ended")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{agent.log_tail()}") from None
    assert st["phase"] == "Failed"
    assert st["retryable"] is False
    msg = st["message"]
    for part in (FIELD, "version skew", naming.package_version(), NEWER, "upgrade the agent"):
        assert part in msg, msg
    print(f"refused after {time.monotonic() - began:.1f} s: {msg}")
