"""Entry points and what operators of the operator see: kopf run -m, metrics, printer columns."""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.kube import kubectl
from tests.support.op_harness import Fulfiller, World, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_kopf_run_module(world: World, agents: Fulfiller, operator_factory: Any) -> None:
    kopf = str(Path(sys.executable).with_name("kopf"))
    operator_factory([kopf, "run", "-m", "vmresize.operator.handlers", "--standalone",
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
    # Claims versus schedulable capacity, from Host events: the confirmed medium instance
    # holds b; a offers (capacity - reserved 512 MiB) * ratios (vCPU 4.0).
    a, b = world.host("a"), world.host("b")
    expected = {(b, "vcpus", "claimed"): 2, (b, "memory_mib", "claimed"): 2048,
                (b, "disk_gib", "claimed"): 20, (a, "vcpus", "claimed"): 0,
                (a, "vcpus", "capacity"): 32, (a, "memory_mib", "capacity"): 16384,
                (a, "disk_gib", "capacity"): 500}

    def host_gauges() -> bool:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=10).read().decode()
        return all(f'vmresize_host_{kind}{{host="{host}",resource="{res}"}} {value:.1f}'
                   in body for (host, res, kind), value in expected.items())
    wait_for("host claim gauges", host_gauges, timeout=30)
    kubectl(kubeconfig, "delete", "hosts.vmresize.io", a)
    wait_for("a deleted Host's gauges gone", lambda: f'host="{a}"' not in urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode(), timeout=30)


def test_kubectl_tells_the_story(world: World, agents: Fulfiller, operator_factory: Any,
                                 kubeconfig: Path) -> None:
    """Several resizes in different states, as `kubectl get`/`describe` show them."""
    operator_factory()
    world.make_host("a")
    world.make_host("b")
    for i in range(1, 6):
        world.instance(f"vm{i}", "small", host="a")
    agents.script.fail[("Finish", "inst:vm4")] = "qemu: could not open disk image"
    agents.script.hold.add(("MigrateDisk", "inst:vm5"))
    world.resize("grow-confirmed", "vm1", "medium")
    world.resize("grow-reverted", "vm2", "medium")
    world.resize("shrink-refused", "vm3", "tiny-disk")
    world.resize("rolled-back", "vm4", "large")
    world.resize("copying", "vm5", "medium")
    world.wait_phase("grow-confirmed", "VerifyResize")
    world.patch_resize("grow-confirmed", {"confirm": True})
    world.wait_phase("grow-reverted", "VerifyResize")
    world.patch_resize("grow-reverted", {"revert": True})
    for name, phase in (("grow-confirmed", "Confirmed"), ("grow-reverted", "Reverted"),
                        ("shrink-refused", "Failed"), ("rolled-back", "RolledBack")):
        world.wait_phase(name, phase)
    wait_for("progress", lambda: world.status("vmresizes", "copying").get(
        "progress", {}).get("percent") == 42)
    ns = ["-n", world.ns]
    wide = kubectl(kubeconfig, "get", "vmresize", *ns, "-o", "wide").stdout
    insts = kubectl(kubeconfig, "get", "instances", *ns, "-o", "wide").stdout
    tasks = kubectl(kubeconfig, "get", "hosttasks", *ns).stdout
    described = kubectl(kubeconfig, "describe", "vmresize", *ns, "rolled-back").stdout
    print(f"\n$ kubectl get vmresize -o wide\n{wide}\n$ kubectl get instances -o wide\n{insts}"
          f"\n$ kubectl get hosttasks\n{tasks}\n$ kubectl describe vmresize rolled-back\n"
          f"{described}")
    rows = {line.split()[0]: line for line in wide.splitlines()[1:]}
    assert "Confirmed" in rows["grow-confirmed"]
    assert "Reverted" in rows["grow-reverted"]
    assert "DiskShrink" in rows["shrink-refused"]
    assert "RolledBack" in rows["rolled-back"]
    assert "42% 310MiB/s" in rows["copying"]
    assert "Migrating" in rows["copying"]
    assert "FinishingFailed" in described
    assert "qemu: could not open disk image" in described
    agents.release("MigrateDisk", "inst:vm5")
