"""Test harness: the real operator as a subprocess, and a scripted fulfiller of HostTasks.

The fulfiller plays the agents: it polls the HostTasks of the test namespace and sets
their status the way an agent would (Running with progress, then Succeeded with results,
or Failed when the script says so). It also keeps the test Hosts' heartbeats fresh with
merge patches of status (as an agent does), which races the operator's guarded writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hack import children
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support import REPO
from tests.support.polling import wait_for as _poll
from vmresize.api.meta import API_VERSION, GROUP, VERSION

G, V = GROUP, VERSION


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0,
             interval: float = 0.2) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout.

    The operator tests' argument order over the one polling loop, ``tests.support.polling``.
    """
    return _poll(probe, timeout=timeout, what=what, interval=interval)


class Operator:
    """``python -m vmresize.operator --standalone --namespace NS`` with its log in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path,
                 argv: list[str] | None = None, **env: str) -> None:
        self.kubeconfig, self.namespace, self.log = kubeconfig, namespace, log
        self.argv = argv or [sys.executable, "-m", "vmresize.operator", "--standalone",
                             "--namespace", namespace]
        self.env = {"VMRESIZE_POLL_SECONDS": "1", "VMRESIZE_METRICS_PORT": "0",
                    "VMRESIZE_METRICS_ADDRESS": "127.0.0.1", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Operator:
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        env["PYTHONPATH"] = os.pathsep.join(str(REPO / p) for p in ("api", "operator", "agent"))
        with self.log.open("ab") as out:
            out.write(f"\n==== start {self.starts} ====\n".encode())
            self.proc = children.track(subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env))
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        children.untrack(self.proc)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        children.untrack(self.proc)
        self.proc = None

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@dataclass
class Script:
    """What the fake agents do. Keys are (action, host) with host None meaning any host."""

    fail: dict[tuple[str, str | None], str] = field(default_factory=dict)
    hold: set[tuple[str, str | None]] = field(default_factory=set)
    non_retryable: bool = False
    once: set[tuple[str, str | None]] = field(default_factory=set)
    """Keys of ``fail`` that fail only once, then succeed (a transient fault)."""
    delay: float = 0.0
    """Seconds each task stays Running before it ends (a slow agent)."""
    silent: set[str] = field(default_factory=set)
    """Hosts whose agent is frozen: no heartbeat, no task served (not even accepted)."""

    def match(self, table: Any, action: str, host: str, instance: str = "") -> Any:
        """Keys: (action, host), (action, "inst:<name>") or (action, None) for any."""
        for k in ((action, host), (action, f"inst:{instance.split('/')[-1]}"), (action, None)):
            if k in table:
                return k
        return None


class Fulfiller:
    """Plays every agent of the test: fulfils HostTasks, heartbeats Hosts."""

    def __init__(self, api: client.ApiClient, namespace: str, hosts: list[str]) -> None:
        self.co = client.CustomObjectsApi(api)
        self.ns, self.hosts = namespace, hosts
        self.script = Script()
        self.seen: dict[str, dict[str, Any]] = {}
        self.running_since: dict[str, float] = {}
        self.done: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.lock = threading.Lock()

    def __enter__(self) -> Fulfiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def release(self, action: str, host: str | None = None) -> None:
        with self.lock:
            self.script.hold.discard((action, host))

    def actions(self) -> list[str]:
        return [f"{t['spec']['action']}@{t['spec']['host']}" for t in self.seen.values()]

    def _patch(self, name: str, status: dict[str, Any]) -> None:
        self.co.patch_namespaced_custom_object_status(G, V, self.ns, "hosttasks", name,
                                                      {"status": status})

    def _loop(self) -> None:
        last_beat = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_beat > 5:
                    for h in [h for h in self.hosts if h not in self.script.silent]:
                        self.co.patch_cluster_custom_object_status(
                            G, V, "hosts", h, {"status": {"heartbeat": now_iso()}})
                    last_beat = time.monotonic()
                tasks = self.co.list_namespaced_custom_object(G, V, self.ns, "hosttasks")
                for t in tasks["items"]:
                    self._serve(t)
            except ApiException:
                pass
            self._stop.wait(0.1)

    def _serve(self, t: dict[str, Any]) -> None:
        name, spec = t["metadata"]["name"], t["spec"]
        phase = (t.get("status") or {}).get("phase", "Pending")
        self.seen.setdefault(name, t)
        if phase in ("Succeeded", "Failed"):
            return
        action, host = spec["action"], spec["host"]
        if host in self.script.silent:
            return
        with self.lock:
            held = self.script.match(self.script.hold, action, host, spec["instance"])
            failing = self.script.match(self.script.fail, action, host, spec["instance"])
        if phase == "Pending":
            progress = {"bytesDone": 0, "bytesTotal": 0, "rateBytesPerSecond": 0}
            if action == "MigrateDisk":
                progress = {"bytesDone": 42 << 20, "bytesTotal": 100 << 20,
                            "rateBytesPerSecond": 310 << 20}
            self._patch(name, {"phase": "Running", "attempt": 1, "startedAt": now_iso(),
                               "progress": progress})
            return
        if held is not None:
            return
        since = self.running_since.setdefault(name, time.monotonic())
        if time.monotonic() - since < self.script.delay:
            return
        if failing is not None:
            message = self.script.fail[failing]
            with self.lock:
                if failing in self.script.once:
                    del self.script.fail[failing]
            self._patch(name, {"phase": "Failed", "message": message,
                               "retryable": not self.script.non_retryable,
                               "finishedAt": now_iso()})
            self.done.append(name)
            return
        self._patch(name, {"phase": "Succeeded", "finishedAt": now_iso(),
                           "progress": {"bytesDone": 100 << 20, "bytesTotal": 100 << 20,
                                        "rateBytesPerSecond": 310 << 20},
                           "result": self._result(spec)})
        self.done.append(name)

    @staticmethod
    def _result(spec: dict[str, Any]) -> dict[str, Any]:
        f = spec.get("flavor") or {}
        out: dict[str, Any] = {"powerState": "Running"}
        if spec["action"] in ("Spawn", "Adopt", "Finish"):
            out.update(vcpus=f.get("vcpus", 1), memoryMiB=f.get("memoryMiB", 256),
                       diskGiB=f.get("diskGiB", 1),
                       domainName=spec.get("domainName"), diskPath=spec.get("diskPath")
                       or f"instances/adopted/{spec.get('domainName')}/disk.qcow2")
        if spec["action"] == "MigrateDisk":
            out.update(checksum="0" * 63 + "1", sizeBytes=100 << 20, downtimeSeconds=0.8)
            out["powerState"] = "Shutoff"
        return {k: v for k, v in out.items() if v is not None}


TEST_LABEL = f"{GROUP}/test"

FLAVORS = {  # name: (vcpus, memoryMiB, diskGiB)
    "small": (1, 1024, 10),
    "medium": (2, 2048, 20),
    "large": (4, 4096, 40),
    "tiny-disk": (1, 1024, 5),
    "eph-2": (1, 1024, 10),
    "eph-1": (2, 2048, 20),
}
EPHEMERAL_GIB = {"eph-2": 2, "eph-1": 1}  # eph-2 -> eph-1 shrinks the ephemeral disk


class World:
    """Create and read the test's objects."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.co = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = ns
        self.hosts: list[str] = []
        self.flavors: list[str] = []

    def flavor(self, short: str) -> str:
        return f"{self.ns}-{short}"

    def host(self, short: str) -> str:
        return f"{self.ns}-{short}"

    def make_flavors(self) -> None:
        for short, (c, m, d) in FLAVORS.items():
            name = self.flavor(short)
            self.co.create_cluster_custom_object(G, V, "flavors", {
                "apiVersion": API_VERSION, "kind": "Flavor", "metadata": {"name": name},
                "spec": {"vcpus": c, "memoryMiB": m, "diskGiB": d,
                         "ephemeralGiB": EPHEMERAL_GIB.get(short, 0), "extraSpecs": {
                    f"aggregate_instance_extra_specs:{TEST_LABEL}": self.ns}}})
            self.flavors.append(name)

    def make_host(self, short: str, vcpus: int = 8, memory_mib: int = 16384 + 512,
                  disk_gib: int = 500, enabled: bool = True, fresh: bool = True) -> str:
        name = self.host(short)
        self.co.create_cluster_custom_object(G, V, "hosts", {
            "apiVersion": API_VERSION, "kind": "Host",
            "metadata": {"name": name, "labels": {TEST_LABEL: self.ns}},
            "spec": {"enabled": enabled}})
        self.co.patch_cluster_custom_object_status(G, V, "hosts", name, {"status": {
            "capacity": {"vcpus": vcpus, "memoryMiB": memory_mib, "diskGiB": disk_gib},
            # A stale host's agent is down: not ready either, since the fake agents'
            # heartbeat loop refreshes every test host's heartbeat within 5 s.
            "ready": fresh, "heartbeat": now_iso() if fresh else "2020-01-01T00:00:00Z",
            "storageRoot": "/var/lib/vmresize",
            "migrationEndpoint": {"address": "127.0.0.1", "port": 2222},
            "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTests0000000000000"}})
        self.hosts.append(name)
        return name

    def get(self, plural: str, name: str) -> dict[str, Any]:
        if plural in ("hosts", "flavors"):
            return dict(self.co.get_cluster_custom_object(G, V, plural, name))
        return dict(self.co.get_namespaced_custom_object(G, V, self.ns, plural, name))

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return dict(self.get(plural, name).get("status") or {})

    def instance(self, name: str, flavor: str = "small", host: str | None = None,
                 wait: bool = True) -> dict[str, Any]:
        spec: dict[str, Any] = {"flavor": self.flavor(flavor)}
        if host:
            spec["host"] = self.host(host)
        self.co.create_namespaced_custom_object(G, V, self.ns, "instances", {
            "apiVersion": API_VERSION, "kind": "Instance", "metadata": {"name": name},
            "spec": spec})
        if not wait:
            return {}
        return dict(wait_for(f"instance {name} Active", lambda: (
            s := self.status("instances", name)).get("phase") == "Active" and s, timeout=60))

    def resize(self, name: str, instance: str, flavor: str | None = None,
               **spec: Any) -> None:
        body: dict[str, Any] = {"instanceName": instance, **spec}
        if flavor:
            body["flavor"] = self.flavor(flavor)
        self.co.create_namespaced_custom_object(G, V, self.ns, "vmresizes", {
            "apiVersion": API_VERSION, "kind": "VMResize", "metadata": {"name": name},
            "spec": body})

    def patch_resize(self, name: str, spec: dict[str, Any]) -> None:
        self.co.patch_namespaced_custom_object(G, V, self.ns, "vmresizes", name,
                                               {"spec": spec})

    def wait_phase(self, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        """The status once the resize is in one of ``phases`` and has carried out what that
        phase asks of claims and the Instance (``status.pending`` empty: the operator
        records a decision before it acts on it)."""
        return dict(wait_for(f"vmresize {name} in {phases}", lambda: (
            s := self.status("vmresizes", name)).get("phase") in phases
            and not s.get("pending") and s, timeout=timeout))

    def raw_allocations(self, short_or_name: str) -> dict[str, Any]:
        """The host's allocations as stored: keyed ``<Kind>/<holder uid>``."""
        name = short_or_name if short_or_name.startswith(self.ns) else self.host(short_or_name)
        return dict(self.status("hosts", name).get("allocations") or {})

    def allocations(self, short_or_name: str) -> dict[str, Any]:
        """The host's allocations keyed ``<Kind>/<namespace>/<name>`` of the holder, for
        readable asserts (the stored keys carry UIDs, checked by their own test)."""
        return {f"{a['kind']}/{a['consumer']}": a
                for a in self.raw_allocations(short_or_name).values()}

    def events(self, name: str) -> list[str]:
        evs = self.core.list_namespaced_event(self.ns,
                                              field_selector=f"involvedObject.name={name}")
        return [f"{e.type} {e.reason}: {e.message}" for e in evs.items]

    def events_once(self, name: str, text: str, timeout: float = 30.0) -> list[str]:
        """The events of ``name`` as soon as one mentions ``text``.

        kopf posts an event after the status write it belongs to, so a test that has just
        seen the phase may not see its event yet.
        """
        def probe() -> list[str] | None:
            evs = self.events(name)
            return evs if any(text in e for e in evs) else None

        return list(wait_for(f"an event of {name} mentioning {text!r}", probe, timeout))

    def cleanup(self) -> None:
        for plural in ("vmresizes", "instances"):
            try:
                items = self.co.list_namespaced_custom_object(G, V, self.ns, plural)["items"]
            except ApiException:
                continue
            for it in items:
                with contextlib.suppress(ApiException):
                    self.co.patch_namespaced_custom_object(
                        G, V, self.ns, plural, it["metadata"]["name"],
                        {"metadata": {"finalizers": None}})
        for plural, names in (("hosts", self.hosts), ("flavors", self.flavors)):
            for n in names:
                with contextlib.suppress(ApiException):
                    self.co.delete_cluster_custom_object(G, V, plural, n)
