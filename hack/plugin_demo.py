"""A cluster to try ``kubectl vmresize`` on: a local control plane, the real operator, and
fake agents (the operator tests' Fulfiller) whose disk copy takes a few seconds.

    .venv/bin/python -m hack.plugin_demo [--dir DIR]

It prints the kubeconfig and the namespace (``demo``), then runs until Ctrl-C or SIGTERM
and stops exactly what it started. Hosts ``demo-a`` (16 GiB), ``demo-b`` (8 GiB),
``demo-c`` (4 GiB); flavors ``demo-small``, ``demo-medium``, ``demo-large`` and
``demo-xlarge`` (32 GiB, bigger than every host); Instance ``web`` (small) on demo-a.
The agents are fakes: the bytes, rate and downtime they report are scripted, not measured.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hack.localcluster import REPO, LocalCluster
from kubernetes import config
from tests.support.op_harness import TEST_LABEL, Fulfiller, G, Operator, V, World

NAMESPACE = "demo"
#: The scripted copy: 100 MiB (what the Fulfiller reports when done) at 20 MiB/s: 5 s.
TOTAL, RATE = 100 << 20, 20 << 20


class CopyingFulfiller(Fulfiller):
    """The Fulfiller, but MigrateDisk reports a copy that advances for a few seconds."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.last_patch: dict[str, float] = {}

    def _serve(self, t: dict[str, Any]) -> None:
        name, st = t["metadata"]["name"], t.get("status") or {}
        if t["spec"]["action"] == "MigrateDisk" and st.get("phase") == "Running":
            since = self.running_since.setdefault(name, time.monotonic())
            done = int((time.monotonic() - since) * RATE)
            if done < TOTAL:
                if time.monotonic() - self.last_patch.get(name, 0.0) >= 0.5:
                    self._patch(name, {"progress": {"bytesDone": done, "bytesTotal": TOTAL,
                                                    "rateBytesPerSecond": RATE}})
                    self.last_patch[name] = time.monotonic()
                return
        super()._serve(t)


def main() -> None:
    """Start everything, print how to reach it, and wait for a signal to stop it all."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp)")
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="vmresize-plugin-demo-"))
    cluster = LocalCluster(work).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        kc = str(cluster.kubeconfig)
        subprocess.run(["kubectl", f"--kubeconfig={kc}", "apply", "--server-side", "-f",
                        str(REPO / "crds")], check=True, capture_output=True)
        subprocess.run(["kubectl", f"--kubeconfig={kc}", "wait", "--for=condition=Established",
                        "--timeout=60s", "-f", str(REPO / "crds")], check=True,
                       capture_output=True)
        subprocess.run(["kubectl", f"--kubeconfig={kc}", "create", "namespace", NAMESPACE],
                       check=True, capture_output=True)
        api = config.new_client_from_config(config_file=kc)
        world = World(api, NAMESPACE)
        world.make_flavors()
        name = world.flavor("xlarge")
        world.co.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": f"{G}/{V}", "kind": "Flavor", "metadata": {"name": name},
            "spec": {"vcpus": 8, "memoryMiB": 32768, "diskGiB": 80, "extraSpecs": {
                f"aggregate_instance_extra_specs:{TEST_LABEL}": NAMESPACE}}})
        world.make_host("a", memory_mib=16384 + 512)
        world.make_host("b", memory_mib=8192 + 512)
        world.make_host("c", memory_mib=4096 + 512)
        with CopyingFulfiller(api, NAMESPACE, world.hosts):
            op = Operator(cluster.kubeconfig, NAMESPACE, work / "operator.log").start()
            try:
                world.instance("web", "small", host="a")
                print(f"export KUBECONFIG={kc}   # namespace {NAMESPACE}; operator log "
                      f"{work / 'operator.log'}", flush=True)
                while not stop.wait(1):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                op.stop()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
