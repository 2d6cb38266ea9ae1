"""HA with kopf peering: two operators, only the higher priority acts; when it is killed
the other takes over and finishes the resize."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.support.op_harness import Fulfiller, World, wait_for
from tests.support.peering import install_peering_crd


def test_peering_failover(world: World, agents: Fulfiller, operator_factory: Any,
                          kubeconfig: Path, api_client: client.ApiClient,
                          tmp_path: Path) -> None:
    install_peering_crd(kubeconfig, tmp_path)
    co = client.CustomObjectsApi(api_client)
    try:
        co.create_namespaced_custom_object("kopf.dev", "v1", world.ns, "kopfpeerings", {
            "apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
            "metadata": {"name": "vmresize-operator"}})
    except ApiException as e:
        if e.status != 409:   # left over from an earlier run is fine
            raise
    base = [sys.executable, "-m", "vmresize.operator", "--namespace", world.ns,
            "--peering", "vmresize-operator"]
    env = {"VMRESIZE_PEERING_LIFETIME_SECONDS": "10"}
    high = operator_factory([*base, "--priority", "100"], log="high.log", **env)
    # Start the second one once the first is in the peering object, as in a rollout.
    wait_for("the first operator to be active", lambda: "Resuming operations" in
             high.log.read_text(errors="replace"), timeout=60)
    low = operator_factory([*base, "--priority", "10"], log="low.log", **env)
    wait_for("the second operator to start", lambda: "Initial authentication has finished"
             in low.log.read_text(errors="replace"), timeout=60)
    time.sleep(1)   # it reads the peering object and stays paused (there is no log line)
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    world.resize("r1", "vm1", "medium")
    world.wait_phase("r1", "VerifyResize")
    before = low.log.read_text(errors="replace")
    assert "Handler '" not in before, "the low-priority peer waited while the high one lived"
    assert "Daemon '" not in before
    high.kill9()
    world.patch_resize("r1", {"confirm": True})
    st = world.wait_phase("r1", "Confirmed", timeout=90)
    assert st["destHost"] == world.host("b")
    after = low.log.read_text(errors="replace")[len(before):]
    assert "Resuming operations" in after, "and took over when the high one died"
    assert "Daemon 'drive'" in after
