"""What the fleet benchmarks share: a real local control plane with the CRDs, the operator
as a process, bulk creation of Hosts, Instances and VMResizes, and the API server's own
request counter (``apiserver_request_total`` from ``/metrics``).

Objects are seeded with their status written directly (the state an operator finds after a
restart): Instances Active on a Host, VMResizes already in VerifyResize, Hosts with claims.
Nothing here is timed; :mod:`bench.fleet` times.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hack.localcluster import LocalCluster
from kubernetes import client, config, watch
from tests.support import REPO
from tests.support.kube import kubectl

from vmresize.api.meta import API_VERSION, GROUP, VERSION

G, V = GROUP, VERSION
LABEL = f"{GROUP}/bench"
NS = "bench"
OPERATOR_NS = "vmresize-system"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """A LocalCluster (no controller manager: its requests would be noise) with the CRDs and
    an API client with a large connection pool for bulk writes."""

    def __init__(self) -> None:
        for attempt in range(3):
            self.dir = Path(tempfile.mkdtemp(prefix="vmresize-bench-"))
            self.lc = LocalCluster(self.dir, with_controller_manager=False)
            try:
                self.lc.start()
                break
            except RuntimeError:   # e.g. two free ports that were the same one: again
                self.lc.stop()
                if attempt == 2:
                    raise
        kc = self.lc.kubeconfig
        kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl(kc, "wait", "--for=condition=Established", "--timeout=60s",
                "-f", str(REPO / "crds"))
        for ns in (NS, OPERATOR_NS):
            kubectl(kc, "create", "namespace", ns)
        conf = client.Configuration()
        config.load_kube_config(str(kc), client_configuration=conf)  # type: ignore[no-untyped-call]
        conf.connection_pool_maxsize = 32
        self.api = client.ApiClient(conf)
        self.co = client.CustomObjectsApi(self.api)

    def stop(self) -> None:
        self.lc.stop()

    # -- metrics

    def requests(self) -> dict[tuple[str, str], float]:
        """``apiserver_request_total`` summed by (verb, resource), from the API server."""
        status, raw = self.lc._get("/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics: HTTP {status}")
        text = raw.decode()
        out: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            key = (labels.get("verb", ""), labels.get("resource", ""))
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    # -- bulk objects

    def parallel(self, fn: Callable[[int], Any], items: Iterable[int], workers: int = 16) -> None:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(fn, items):
                pass

    def make_host(self, name: str, allocations: dict[str, Any] | None = None,
                  vcpus: int = 64, memory_mib: int = 262144, disk_gib: int = 4000) -> None:
        self.co.create_cluster_custom_object(G, V, "hosts", {
            "apiVersion": API_VERSION, "kind": "Host",
            "metadata": {"name": name, "labels": {LABEL: "1"}}, "spec": {"enabled": True}})
        status: dict[str, Any] = {
            "capacity": {"vcpus": vcpus, "memoryMiB": memory_mib, "diskGiB": disk_gib},
            "ready": True, "heartbeat": now_iso(), "storageRoot": "/var/lib/vmresize",
            "migrationEndpoint": {"address": "127.0.0.1", "port": 2222},
            "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTests0000000000000"}
        if allocations:
            status["allocations"] = allocations
        self.co.patch_cluster_custom_object_status(G, V, "hosts", name, {"status": status})

    def host_count(self) -> int:
        return len(self.co.list_cluster_custom_object(G, V, "hosts")["items"])

    def make_flavor(self, name: str, vcpus: int, memory_mib: int, disk_gib: int) -> None:
        self.co.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": API_VERSION, "kind": "Flavor", "metadata": {"name": name},
            "spec": {"vcpus": vcpus, "memoryMiB": memory_mib, "diskGiB": disk_gib}})

    def make_instance(self, name: str, host: str, flavor: str, size: tuple[int, int, int],
                      lock: tuple[str, str] | None = None) -> str:
        """An Instance Active on ``host`` (status written as the operator would); its UID."""
        body = self.co.create_namespaced_custom_object(G, V, NS, "instances", {
            "apiVersion": API_VERSION, "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavor": flavor}})
        c, m, d = size
        st: dict[str, Any] = {
            "phase": "Active", "host": host, "flavor": flavor, "vcpus": c, "memoryMiB": m,
            "diskGiB": d, "powerState": "Running", "domainName": f"{NS}_{name}",
            "diskPath": f"instances/{NS}/{name}/disk.qcow2"}
        if lock:
            st.update(phase="Resizing", activeResize=lock[0], activeResizeUid=lock[1])
        self.co.patch_namespaced_custom_object_status(G, V, NS, "instances", name,
                                                      {"status": st})
        return str(body["metadata"]["uid"])

    def resize_phase(self, name: str) -> str:
        body = self.co.get_namespaced_custom_object(G, V, NS, "vmresizes", name)
        return str((body.get("status") or {}).get("phase", ""))


class OperatorProcess:
    """``python -m vmresize.operator --standalone`` (every namespace watched, HostTasks in
    ``vmresize-system``) from the source tree ``root`` (this one by default: another tree
    measures another version of the operator)."""

    def __init__(self, cluster: Cluster, log: Path, root: Path = REPO, **env: str) -> None:
        self.cluster, self.log, self.root = cluster, log, root
        self.env = {"VMRESIZE_METRICS_PORT": "0", "VMRESIZE_METRICS_ADDRESS": "127.0.0.1",
                    # The seeded heartbeats are never refreshed (no agents): never stale.
                    "VMRESIZE_HEARTBEAT_STALE_SECONDS": "86400",
                    # Nor are the Prepare tasks ever taken: without this, the resizes an
                    # earlier run left in Preparing stall after 60 s and are scheduled again
                    # (claims, tasks) while a later run measures.
                    "VMRESIZE_STEP_STALE_SECONDS": "86400", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.cluster.lc.kubeconfig), **self.env}
        env["PYTHONPATH"] = os.pathsep.join(str(self.root / p) for p in ("api", "operator"))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vmresize.operator", "--standalone"], stdout=out,
                stderr=subprocess.STDOUT, env={**env, "VMRESIZE_NAMESPACE": OPERATOR_NS},
                cwd=self.root)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = probe()
        if out:
            return out
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s")


class NamespaceWatch:
    """Watches one kind of the bench's objects in a namespace on a thread, from a fresh list
    after a dropped stream or a 410; :meth:`seen_object` gets each object with the bench's
    monotonic time of its event."""

    def __init__(self, co: client.CustomObjectsApi, namespace: str, plural: str) -> None:
        self.co = co
        self.ns = namespace
        self._plural = plural
        self._w = watch.Watch()  # type: ignore[no-untyped-call]
        self._stopping = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def seen_object(self, obj: dict[str, Any], t: float) -> None:
        """Record one object (subclasses)."""
        raise NotImplementedError

    def _run(self) -> None:
        rv = ""
        while not self._stopping:
            try:
                for ev in self._w.stream(self.co.list_namespaced_custom_object, G, V,
                                         self.ns, self._plural, resource_version=rv):
                    t = time.monotonic()
                    obj = ev["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    self.seen_object(obj, t)
            except Exception:   # a dropped stream (or 410): watch again, from a new list
                rv = ""
                self._w = watch.Watch()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        """End the watch (its thread is a daemon: it ends with the stream)."""
        self._stopping = True
        self._w.stop()  # type: ignore[no-untyped-call]
