"""Owners for HostTasks that tests create by hand.

The agents fence destructive steps on the owner: a VMResize (resize steps) or an Instance
(Spawn, Adopt, Destroy) whose ``status.currentTask`` names the task, as the operator records
it before creating the task. Tests that play the operator make such an owner first.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.support.kube import kubectl, kubectl_json
from vmresize.api.hosttask import TaskAction
from vmresize.api.meta import API_VERSION

INSTANCE_ACTIONS = {TaskAction.SPAWN.value, TaskAction.ADOPT.value, TaskAction.DESTROY.value}


def create_owner(kubeconfig: Path, namespace: str, action: str, task: str | None) -> str:
    """A VMResize (resize steps) or Instance (Spawn, Adopt, Destroy) whose status names
    ``task``, as the operator records it before creating the task; returns "<name> <uid>"."""
    if action in INSTANCE_ACTIONS:
        kind, plural = "Instance", "instances.vmresize.io"
        spec: dict[str, Any] = {"flavor": "small"}
    else:
        kind, plural = "VMResize", "vmresizes.vmresize.io"
        spec = {"instanceName": "vm", "flavor": "big"}
    name = f"o-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(body))
    if task is not None:
        kubectl(kubeconfig, "-n", namespace, "patch", plural, name, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": {"currentTask": task}}))
    doc = kubectl_json(kubeconfig, "-n", namespace, "get", plural, name)
    assert doc is not None
    return f"{name} {doc['metadata']['uid']}"
