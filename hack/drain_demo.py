"""A host drain on a real stack, for the record: a local control plane, the real operator,
three real agents (libvirt ``test:///default``, the real asyncssh migration service on
127.0.0.2-4), and ``kubectl vmresize drain`` on one host with five VMs.

    .venv/bin/python -m hack.drain_demo [--dir DIR] [--max-parallel 2]

Four small VMs and one bigger one start on the first host; the other two hosts reserve
all but 512 MiB of their memory (``spec.reserved``, an admin's setting), so the small ones
fit there and the bigger one (1 GiB) fits nowhere. It prints the plugin's output, and a
``kubectl get hostdrain -o yaml`` snapshot each time the drain's counts change, then the
VMs' placement; everything it started is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from hack.localcluster import REPO, LocalCluster
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tests.support.agent_harness import AgentProcess, stop_agents, write_migration_key
from tests.support.op_harness import G, Operator, V, wait_for

NS = "demo"
FLAVORS = {"demo-small": (1, 128, 1), "demo-big": (1, 1024, 1)}
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def kubectl(kc: Path, *args: str) -> str:
    return subprocess.run(["kubectl", f"--kubeconfig={kc}", *args], check=True,
                          capture_output=True, text=True).stdout


def snapshot(kc: Path, name: str) -> dict[str, Any]:
    doc = yaml.safe_load(kubectl(kc, "get", "hostdrain", name, "-o", "yaml"))
    for k in ("managedFields", "annotations", "finalizers"):
        doc["metadata"].pop(k, None)
    return dict(doc)


def main() -> None:
    """Run the drain and print its record."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--max-parallel", type=int, default=2)
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="vmresize-drain-demo-"))
    cluster = LocalCluster(work).start()
    agents: list[AgentProcess] = []
    op: Operator | None = None
    try:
        kc = cluster.kubeconfig
        kubectl(kc, "apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl(kc, "wait", "--for=condition=Established", "--timeout=60s", "-f",
                str(REPO / "crds"))
        kubectl(kc, "create", "namespace", NS)
        co = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(kc)))
        for name, (c, m, d) in FLAVORS.items():
            co.create_cluster_custom_object(G, V, "flavors", {
                "apiVersion": f"{G}/{V}", "kind": "Flavor", "metadata": {"name": name},
                "spec": {"vcpus": c, "memoryMiB": m, "diskGiB": d}})
        key = write_migration_key(work / "migration_key")
        for n, addr in enumerate(ADDRESSES):
            agents.append(AgentProcess(name=f"hv-{n + 1}", workdir=work / f"hv-{n + 1}",
                                       address=addr, kubeconfig=kc, namespace=NS,
                                       key_file=key).start())
        op = Operator(kc, NS, work / "operator.log").start()
        def ready(name: str) -> bool:
            try:
                return bool((co.get_cluster_custom_object(G, V, "hosts", name)
                             .get("status") or {}).get("ready"))
            except ApiException:     # not registered yet
                return False

        for a in agents:
            wait_for(f"Host {a.name} ready", lambda a=a: ready(a.name), timeout=120)
        for a in agents[1:]:
            cap = co.get_cluster_custom_object(G, V, "hosts", a.name)["status"]["capacity"]
            co.patch_cluster_custom_object(G, V, "hosts", a.name, {"spec": {"reserved": {
                "memoryMiB": cap["memoryMiB"] - 512}}})
        vms = {f"vm{i}": "demo-small" for i in range(1, 5)} | {"vm5": "demo-big"}
        for vm, flavor in vms.items():
            co.create_namespaced_custom_object(G, V, NS, "instances", {
                "apiVersion": f"{G}/{V}", "kind": "Instance", "metadata": {"name": vm},
                "spec": {"flavor": flavor, "host": "hv-1"}})
        for vm in vms:
            wait_for(f"{vm} Active", lambda vm=vm: (co.get_namespaced_custom_object(
                G, V, NS, "instances", vm).get("status") or {}).get("phase") == "Active",
                timeout=180)
        print("$ kubectl get instances -n demo", flush=True)
        print(kubectl(kc, "get", "instances", "-n", NS), flush=True)
        print(f"$ kubectl vmresize drain hv-1 --max-parallel {args.max_parallel} "
              "--reason 'kernel upgrade' --name hv-1-maintenance --wait", flush=True)
        env_kc = {"KUBECONFIG": str(kc), "PYTHONPATH": "api:operator:agent"}
        stop = threading.Event()
        shots: list[dict[str, Any]] = []

        def watch() -> None:
            last = None
            while not stop.is_set():
                try:
                    doc = snapshot(kc, "hv-1-maintenance")
                except subprocess.CalledProcessError:
                    stop.wait(0.5)
                    continue
                key = ((doc.get("status") or {}).get("phase"),
                       (doc.get("status") or {}).get("counts"))
                if key != last:
                    shots.append(doc)
                    last = key
                stop.wait(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        plugin = subprocess.run(
            [sys.executable, "-m", "vmresize.operator.cli.main", "-n", NS, "drain", "hv-1",
             "--max-parallel", str(args.max_parallel), "--reason", "kernel upgrade",
             "--name", "hv-1-maintenance", "--wait", "--timeout", "10m"],
            cwd=REPO, env={**os.environ, **env_kc}, capture_output=True,
            text=True)
        stop.set()
        watcher.join(5)
        print(plugin.stdout + plugin.stderr, f"(exit {plugin.returncode}, "
              f"{time.monotonic() - t0:.0f} s)", flush=True)
        for n, doc in enumerate(shots, 1):
            print(f"--- snapshot {n}: kubectl get hostdrain hv-1-maintenance -o yaml")
            print(yaml.safe_dump(doc, sort_keys=False), flush=True)
        print("$ kubectl get hostdrain")
        print(kubectl(kc, "get", "hostdrain", "-o", "wide"))
        print("$ kubectl get instances -n demo")
        print(kubectl(kc, "get", "instances", "-n", NS))
        print("$ kubectl get vmresize -n demo -o wide")
        print(kubectl(kc, "get", "vmresize", "-n", NS, "-o", "wide"))
        print("$ kubectl get hosts")
        print(kubectl(kc, "get", "hosts"))
        print("$ kubectl get events -A --field-selector involvedObject.kind=HostDrain")
        print(kubectl(kc, "get", "events", "-A", "--sort-by=.lastTimestamp",
                      "--field-selector", "involvedObject.kind=HostDrain"), flush=True)
    finally:
        if op is not None:
            op.stop()
        stop_agents(agents)
        cluster.stop()


if __name__ == "__main__":
    main()
