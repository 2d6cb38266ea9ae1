"""A host drain on a real stack, for the record: a local control plane, the real operator,
three real agents (libvirt ``test:///default``, the real asyncssh migration service on
127.0.0.2-4), and ``kubectl vmresize drain`` on one host with five VMs.

    .venv/bin/python -m hack.drain_demo [--dir DIR] [--max-parallel 2]

Four small VMs and one bigger one start on the first host; the other two hosts reserve
all but 512 MiB of their memory (``spec.reserved``, an admin's setting), so the small ones
fit there and the bigger one (1 GiB) fits nowhere. It prints the plugin's output, and a
``kubectl get hostdrain -o yaml`` snapshot each time the drain's counts change, then the
VMs' placement; everything it started is stopped by PID.

With ``--qemu`` the agents run real QEMU (``qemu:///embed``, one root each, as ``make
demo``) and the five VMs are the booting test guest (``hack/demo_guest.py``: an admin's
domain on hv-1, 128 MiB, or 1 GiB for vm5, defined before hv-1's agent opens the root and
adopted by an Instance). At the end the agents are stopped (their VMs keep running, as over
an agent restart) and each host's embedded libvirt is asked which domains run there: each
VM must run exactly once; the guests' serial logs say which boot they are on.
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
from typing import Any, cast

import yaml
from hack import demo_guest
from hack import guest_domain as gd
from hack.localcluster import REPO, LocalCluster
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tests.support.agent_harness import AgentProcess, stop_agents, write_migration_key
from tests.support.op_harness import G, Operator, V, wait_for

from vmresize.agent.hypervisor import embedded

NS = "demo"
FLAVORS = {"demo-small": (1, 128, 1), "demo-big": (1, 1024, 1)}
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
PYTHONPATH = "api:operator:agent"
# Lists the domains running in one embedded root, once its agent has stopped (one process
# may hold a root); exits without closing, so the domains keep running.
_RUNNING = """
import os, sys
import libvirt
from vmresize.agent.hypervisor import embedded
embedded.setup_for_uri(sys.argv[1])
conn = libvirt.open(sys.argv[1])
print(" ".join(sorted(d.name() for d in conn.listAllDomains(
    libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))), flush=True)
os._exit(0)
"""


def kubectl(kc: Path, *args: str) -> str:
    return subprocess.run(["kubectl", f"--kubeconfig={kc}", *args], check=True,
                          capture_output=True, text=True).stdout


def snapshot(kc: Path, name: str) -> dict[str, Any]:
    doc = yaml.safe_load(kubectl(kc, "get", "hostdrain", name, "-o", "yaml"))
    for k in ("managedFields", "annotations", "finalizers"):
        doc["metadata"].pop(k, None)
    return dict(doc)


def instance_status(co: client.CustomObjectsApi, vm: str) -> dict[str, Any]:
    obj = cast(dict[str, Any], co.get_namespaced_custom_object(G, V, NS, "instances", vm))
    return dict(obj["status"])


def guest_boot(co: client.CustomObjectsApi, agents: list[AgentProcess], vm: str) -> str:
    """What ``vm``'s guest printed on its serial console (next to its root disk on its
    Instance's host), once it has booted there: which boot of its disk it is on."""
    st = instance_status(co, vm)
    agent = next(a for a in agents if a.name == st["host"])
    serial = agent.storage_root / Path(st["diskPath"]).parent / "serial.log"
    boot = "1" if agent.name == "hv-1" else "2"  # each move is one more boot of its disk
    log = gd.wait_serial(serial, lambda g: g.ready is not None and g.disks.get(
        "vda", {}).get("boot") == boot, timeout=600, what=f"{vm} boot {boot} on {agent.name}")
    nics = ", ".join(f"{n} MAC {s.get('mac')}" for n, s in sorted(log.nics.items()))
    return (f"  {vm}: the guest on {agent.name} reports boot "
            f"{log.disks.get('vda', {}).get('boot')} of its root disk, {nics}")


def placement(co: client.CustomObjectsApi, agents: list[AgentProcess],
              vms: dict[str, str]) -> None:
    """Stop the agents (their VMs keep running) and ask each host's embedded libvirt which
    domains run there; every VM must run exactly once, where its Instance says."""
    running: dict[str, list[str]] = {}
    for a in agents:
        a.stop()
        out = subprocess.run([sys.executable, "-c", _RUNNING, embedded.embed_uri(
            a.libvirt_root)], cwd=REPO, env={**os.environ, "PYTHONPATH": PYTHONPATH},
            check=True, capture_output=True, text=True, timeout=120).stdout
        print(f"  {a.name} (agent stopped), its libvirt lists running: "
              f"{out.strip() or '(none)'}")
        for dom in out.split():
            running.setdefault(dom, []).append(a.name)
    bad = []
    print("placement (running copies, from each host's libvirt):")
    for vm in vms:
        st = instance_status(co, vm)
        hosts = running.get(st["domainName"], [])
        ok = hosts == [st["host"]]
        bad += [] if ok else [vm]
        print(f"  {vm} ({st['domainName']}): running on {', '.join(hosts) or 'nothing'}; "
              f"Instance says {st['host']} -> {'OK' if ok else 'WRONG'}")
    print("every VM runs exactly once, where its Instance says" if not bad
          else f"NOT as expected: {', '.join(bad)}", flush=True)
    if bad:
        raise SystemExit(1)


def main() -> None:
    """Run the drain and print its record."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--max-parallel", type=int, default=2)
    p.add_argument("--qemu", action="store_true",
                   help="agents on qemu:///embed, the VMs booting guests")
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
        vms = {f"vm{i}": "demo-small" for i in range(1, 5)} | {"vm5": "demo-big"}
        for n, addr in enumerate(ADDRESSES):
            agents.append(AgentProcess(name=f"hv-{n + 1}", workdir=work / f"hv-{n + 1}",
                                       address=addr, kubeconfig=kc, namespace=NS,
                                       key_file=key, embedded=args.qemu))
        if args.qemu:
            # The admin's domains, before hv-1's agent opens the root; their QEMUs outlive
            # the helper (demo_guest.create_kept), as VMs outlive an agent restart.
            for i, (vm, flavor) in enumerate(vms.items(), 1):
                demo_guest.create_kept(embedded.embed_uri(agents[0].libvirt_root),
                                       agents[0].storage_root, vm, f"52:54:00:de:00:{i:02x}",
                                       memory_mib=FLAVORS[flavor][1])
            # QEMU outlives a stopped agent and is re-parented here: reap it when it exits.
            embedded.become_subreaper()
            embedded.start_reaper(only="qemu-system")
        for a in agents:
            a.start()
        # A drained VM is asked to power off (ACPI, which the guest answers); forced after
        # 30 s, as in `make demo`.
        op = Operator(kc, NS, work / "operator.log", **(
            {"VMRESIZE_POWER_OFF_TIMEOUT_SECONDS": "30"} if args.qemu else {})).start()
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
        for vm, flavor in vms.items():
            adopt = {"adopt": {"domainName": vm}} if args.qemu else {}
            co.create_namespaced_custom_object(G, V, NS, "instances", {
                "apiVersion": f"{G}/{V}", "kind": "Instance", "metadata": {"name": vm},
                "spec": {"flavor": flavor, "host": "hv-1", **adopt}})
        for vm in vms:
            wait_for(f"{vm} Active", lambda vm=vm: (co.get_namespaced_custom_object(
                G, V, NS, "instances", vm).get("status") or {}).get("phase") == "Active",
                timeout=180)
        if args.qemu:  # a drain asks booted guests to power off
            for vm in vms:
                print(guest_boot(co, agents, vm), flush=True)
        print("$ kubectl get instances -n demo", flush=True)
        print(kubectl(kc, "get", "instances", "-n", NS), flush=True)
        print(f"$ kubectl vmresize drain hv-1 --max-parallel {args.max_parallel} "
              "--reason 'kernel upgrade' --name hv-1-maintenance --wait", flush=True)
        env_kc = {"KUBECONFIG": str(kc), "PYTHONPATH": PYTHONPATH}
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
             "--name", "hv-1-maintenance", "--wait", "--timeout",
             "30m" if args.qemu else "10m"],
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
        if args.qemu:
            for vm in vms:
                print(guest_boot(co, agents, vm), flush=True)
            placement(co, agents, vms)
    finally:
        if op is not None:
            op.stop()
        stop_agents(agents)
        cluster.stop()


if __name__ == "__main__":
    main()
