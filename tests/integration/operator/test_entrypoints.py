"""Entry points and what operators of the operator see: kopf run -m, metrics, printer columns."""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

from op_harness import Fulfiller, World, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conftest import kubectl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_kopf_run_module(world: World, agents: Fulfiller, operator_factory: Any) -> None:
    kopf = str(Path(sys.executable).with_name("kopf"))
    operator_factory([kopf, "run", "-m", "vmresize.operator", "--standalone",
                      "--namespace", world.ns], VMRESIZE_NAMESPACE=world.ns)
    world.make_host("a")
    inst = world.instance("vm1", "small")
    assert inst["host"] == world.host("a")
    body = world.get("instances", "vm1")
    assert "operator.vmresize.io/finalizer" in body["metadata"]["finalizers"]


def test_metrics_and_kubectl_columns(world: World, agents: Fulfiller, operator_factory: Any,
                                     kubeconfig: Path) -> None:
    port = _free_port()
    operator_factory(VMRESIZE_METRICS_PORT=str(port))
    world.make_host("a")
    world.make_host("b")
    world.instance("vm1", "small", host="a")
    agents.script.hold.add(("MigrateDisk", None))
    world.resize("r1", "vm1", "medium")
    wait_for("progress display", lambda: world.status("vmresizes", "r1").get(
        "progress", {}).get("display") == "42% 310MiB/s", timeout=60)
    out = kubectl(kubeconfig, "get", "vmresize", "-n", world.ns).stdout
    assert "Migrating" in out
    assert "42% 310MiB/s" in out
    agents.release("MigrateDisk")
    world.wait_phase("r1", "VerifyResize")
    kubectl(kubeconfig, "wait", "-n", world.ns, "vmresize/r1", "--for=condition=VerifyResize",
            "--timeout=30s")
    world.patch_resize("r1", {"confirm": True})
    kubectl(kubeconfig, "wait", "-n", world.ns, "vmresize/r1", "--for=condition=Ready",
            "--timeout=60s")
    wide = kubectl(kubeconfig, "get", "vmresize", "-n", world.ns, "-o", "wide").stdout
    described = kubectl(kubeconfig, "describe", "vmresize", "-n", world.ns, "r1").stdout
    print(f"\n$ kubectl get vmresize -o wide\n{wide}\n$ kubectl describe vmresize r1\n"
          f"{described}")
    assert "Confirmed" in wide
    assert "Confirmed" in described
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'vmresize_resize_phase_transitions_total{phase="VerifyResize"} 1.0' in text
    assert 'vmresize_resizes_finished_total{outcome="Confirmed"} 1.0' in text
    assert "vmresize_resize_downtime_seconds_count 1.0" in text
    assert 'vmresize_resize_phase_duration_seconds_count{phase="Migrating"} 1.0' in text
