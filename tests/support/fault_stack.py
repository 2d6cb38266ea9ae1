"""The stack the fault matrix breaks: real operator, three real agents behind proxies, QEMU.

:class:`FaultStack` owns one namespace, three embedded-QEMU agents on 127.0.0.2-4, each
advertising a :class:`~tests.support.fault_proxy.Proxy` on 127.0.0.12-14 as its migration
endpoint (so a test can slow or cut the link between two agents), a base image of random
data on every host (so a copy has something to send and "mid-copy" is a place in time),
two Flavors that select only these Hosts, and the operator process. A cell may kill, stop
or restart any of these; :meth:`heal` brings every part back before the next cell, and
:meth:`close` stops what was started, by PID.

:class:`Watcher` is the ground truth during one resize: it polls (every 0.1 s) the QEMU
processes of both copies and the VMResize status, and records the phases seen, the moment
no copy ran (power-off) with the source disk's sha256 taken then, the moment a copy ran
again, and whether both copies ever ran at once.

:class:`Ctx` is what one cell's fault can reach: the stack, the watcher, both agents, and
the notes, problems and after-checks that go into the cell's row.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hack import children
from hack import guest_domain as gd
from hack.guest import Guest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.agent_harness import (
    AgentProcess,
    free_port,
    stop_agents,
    write_migration_key,
)
from tests.support.fault_proxy import Proxy
from tests.support.full_stack_harness import FLAVORS, SELECTOR_LABEL, file_sha256, qemu_pid
from tests.support.kube import kubectl
from tests.support.op_harness import Operator
from tests.support.polling import wait_for
from vmresize.agent.hypervisor import embedded

G, V = "vmresize.io", "v1alpha1"
WAIT = 240.0  # TCG on 2 shared, loaded cores; a bound on every wait, not a performance goal
DATA_MIB = 24  # random data in every disk: ~8 s through a 3 MiB/s link, ~0.3 s unthrottled
BASE_IMAGE = "faults-data.qcow2"
GUEST = (1, 128, 1)  # vCPUs, MiB, GiB of the booting guest an Instance adopts
TERMINAL = ("Confirmed", "Reverted", "RolledBack", "RollbackFailed", "Failed", "Cancelled")
HEARTBEAT_STALE = 5  # the operator's VMRESIZE_HEARTBEAT_STALE_SECONDS in the matrix
# The step watchdog's window: well above the source freeze (3 x HEARTBEAT_STALE) and a
# kube-apiserver restart, during which no heartbeat can be written.
STEP_STALE = 40
OPERATOR_ENV = {"VMRESIZE_POWER_OFF_TIMEOUT_SECONDS": "1",
                "VMRESIZE_HEARTBEAT_STALE_SECONDS": str(HEARTBEAT_STALE),
                "VMRESIZE_STEP_STALE_SECONDS": str(STEP_STALE),
                "VMRESIZE_AUTO_CONFIRM_SECONDS": "0"}

_DEFINE_AND_START = """
import os, sys
import libvirt
from vmresize.agent.hypervisor import embedded
embedded.setup_for_uri(sys.argv[1])
conn = libvirt.open(sys.argv[1])
conn.defineXML(sys.argv[2]).create()
os._exit(0)  # no clean close: the domain keeps running, as after a killed agent
"""


@dataclass
class FaultAgent(AgentProcess):
    """An agent that publishes its proxy as its migration endpoint."""

    proxy: Proxy | None = None

    def argv(self) -> list[str]:
        extra = [] if self.proxy is None else [
            "--migration-advertise-address", self.proxy.listen,
            "--migration-advertise-port", str(self.proxy.port)]
        return [*super().argv(), *extra]

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT) to the running agent process."""
        assert self.proc is not None, f"{self.name} is not running"
        os.kill(self.proc.pid, sig)


def make_base_image(workdir: Path) -> tuple[Path, str]:
    """A qcow2 of ``DATA_MIB`` random MiB, and the sha256 of that raw content."""
    raw, qcow = workdir / "base.raw", workdir / BASE_IMAGE
    data = os.urandom(DATA_MIB << 20)
    raw.write_bytes(data)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                    str(qcow)], check=True, timeout=120)
    raw.unlink()
    return qcow, hashlib.sha256(data).hexdigest()


@dataclass
class FaultStack:
    """See the module docstring."""

    kubeconfig: Path
    workdir: Path
    api: client.ApiClient
    ns: str = field(default_factory=lambda: f"fm-{uuid.uuid4().hex[:8]}")
    agents: dict[str, FaultAgent] = field(default_factory=dict)
    operator: Operator | None = None
    extra_operators: list[Operator] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    source_mounts: list[Path] = field(default_factory=list)  # kept until close()
    _unmounts: list[int] = field(default_factory=list)
    base_sha: str = ""
    flavors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.co = client.CustomObjectsApi(self.api)

    def flavor(self, short: str) -> str:
        return f"{self.ns}-{short}"

    def host(self, i: int) -> str:
        return f"{self.ns}-hv{i}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FaultStack:
        kubectl(self.kubeconfig, "create", "namespace", self.ns)
        key = write_migration_key(self.workdir / "migration_key")
        base, self.base_sha = make_base_image(self.workdir)
        for i in (1, 2, 3):
            address = f"127.0.0.{i + 1}"
            agent = FaultAgent(name=self.host(i), workdir=self.workdir / f"hv{i}",
                               address=address, kubeconfig=self.kubeconfig, namespace=self.ns,
                               key_file=key, embedded=True)
            agent.port = free_port(address)
            agent.proxy = Proxy(f"127.0.0.{i + 11}", address, agent.port).start()
            (agent.storage_root / "images").mkdir(parents=True, exist_ok=True)
            (agent.storage_root / "images" / BASE_IMAGE).write_bytes(base.read_bytes())
            self.agents[agent.name] = agent.start()
        for name in self.agents:
            wait_for(lambda n=name: self.get("hosts", n), timeout=WAIT,  # type: ignore[misc]
                     what=f"Host {name} registered")
            kubectl(self.kubeconfig, "label", "hosts.vmresize.io", name,
                    f"{SELECTOR_LABEL}={self.ns}", "--overwrite")
        for short, (vcpus, mib, gib) in FLAVORS.items():
            self.flavors.append(self.flavor(short))
            self.co.create_cluster_custom_object(G, V, "flavors", {
                "apiVersion": f"{G}/{V}", "kind": "Flavor",
                "metadata": {"name": self.flavor(short)},
                "spec": {"vcpus": vcpus, "memoryMiB": mib, "diskGiB": gib, "extraSpecs": {
                    f"aggregate_instance_extra_specs:{SELECTOR_LABEL}": self.ns}}})
        self.operator = self.new_operator().start()
        for name in self.agents:
            wait_for(lambda n=name: (self.get("hosts", n) or {}).get(  # type: ignore[misc]
                "status", {}).get("ready"), timeout=WAIT, what=f"Host {name} ready")
        return self

    def new_operator(self, argv: list[str] | None = None, log: str = "operator.log",
                     **env: str) -> Operator:
        return Operator(self.kubeconfig, self.ns, self.workdir / log, argv,
                        **{**OPERATOR_ENV, **env})

    def heal(self) -> None:
        """Bring back whatever the last cell broke: agents, operator, links, filesystems."""
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        self.mounts.clear()
        for key in self._unmounts:
            children.done(key)
        self._unmounts.clear()
        for op in self.extra_operators:
            op.stop()
        self.extra_operators.clear()
        for agent in self.agents.values():
            assert agent.proxy is not None
            agent.proxy.reset()
            if agent.alive():
                agent.send(signal.SIGCONT)
            else:
                agent.start()
        if self.operator is not None and (self.operator.proc is None
                                          or self.operator.proc.poll() is not None):
            self.operator.start()

    def close(self) -> None:
        self.heal()
        for mount in self.source_mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        if self.operator is not None:
            self.operator.stop()
        stop_agents(self.agents.values())
        for agent in self.agents.values():
            if agent.proxy is not None:
                agent.proxy.stop()
        for plural in ("vmresizes", "instances", "hosttasks"):
            for obj in self._items(plural):
                with contextlib.suppress(Exception):
                    self.co.patch_namespaced_custom_object(
                        G, V, self.ns, plural, obj["metadata"]["name"],
                        {"metadata": {"finalizers": None}})
        kubectl(self.kubeconfig, "delete", "namespace", self.ns, "--wait=false", check=False)
        for plural, names in (("hosts", list(self.agents)), ("flavors", self.flavors)):
            for name in names:
                with contextlib.suppress(Exception):
                    self.co.delete_cluster_custom_object(G, V, plural, name)

    # -- the API --------------------------------------------------------------------------

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it is gone or the API server does not answer."""
        try:
            if plural in ("hosts", "flavors"):
                return dict(self.co.get_cluster_custom_object(G, V, plural, name))
            return dict(self.co.get_namespaced_custom_object(G, V, self.ns, plural, name))
        except Exception:
            return None

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return dict((self.get(plural, name) or {}).get("status") or {})

    def _items(self, plural: str) -> list[dict[str, Any]]:
        try:
            return list(self.co.list_namespaced_custom_object(G, V, self.ns, plural)["items"])
        except Exception:
            return []

    def create_instance(self, name: str, host: str) -> dict[str, Any]:
        self.co.create_namespaced_custom_object(G, V, self.ns, "instances", {
            "apiVersion": f"{G}/{V}", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavor": self.flavor("small"), "host": host,
                     "image": {"baseImage": BASE_IMAGE}}})
        return dict(wait_for(lambda: (s := self.status("instances", name)).get(
            "phase") == "Active" and s, timeout=WAIT, what=f"Instance {name} Active"))

    def create_resize(self, name: str, instance: str, dest: str,
                      mode: str = "PreCopy") -> None:
        self.co.create_namespaced_custom_object(G, V, self.ns, "vmresizes", {
            "apiVersion": f"{G}/{V}", "kind": "VMResize", "metadata": {"name": name},
            "spec": {"instanceName": instance, "flavor": self.flavor("big"),
                     "targetHost": dest, "migrationMode": mode}})

    def adopt_guest(self, name: str, host: str, guest: Guest, *, data_cluster: str = "64k",
                    tmpfs: str | None = None, **options: str) -> dict[str, Any]:
        """An Instance ``name`` that adopts the booting test guest (``hack/guest.py``) on
        ``host``, of the Flavor ``guest`` (:data:`GUEST`: the guest does not boot in the
        small flavor's 64 MiB, and the Instance's claim must be the domain's size): root
        disk a copy of the base image, writer on ``vdb`` (qcow2 clusters of
        ``data_cluster``), ``options`` its further ``vmresize.*`` kernel arguments; with
        ``tmpfs`` (a size), its instance directory is a tmpfs of its own (unmounted by
        :meth:`close`). The domain is defined and started in the agent's embedded root by
        a short helper process while the agent is down (one process may hold the root);
        QEMU outlives the helper, as it outlives a killed agent. Returns the status."""
        if self.flavor("guest") not in self.flavors:
            self.flavors.append(self.flavor("guest"))
            self.co.create_cluster_custom_object(G, V, "flavors", {
                "apiVersion": f"{G}/{V}", "kind": "Flavor",
                "metadata": {"name": self.flavor("guest")},
                "spec": {"vcpus": GUEST[0], "memoryMiB": GUEST[1], "diskGiB": GUEST[2],
                         "extraSpecs": {
                             f"aggregate_instance_extra_specs:{SELECTOR_LABEL}": self.ns}}})
        agent = self.agents[host]
        d = agent.storage_root / "instances" / self.ns / name
        d.mkdir(parents=True)
        if tmpfs is not None:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs}", "tmpfs", str(d)],
                           check=True)
            self.source_mounts.append(d)
        shutil.copyfile(agent.storage_root / "images" / BASE_IMAGE, d / "root.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                        f"cluster_size={data_cluster}", str(d / "data.qcow2"), "16M"],
                       check=True, timeout=60)
        dom = f"{self.ns}.{name}"
        xml = gd.domain_xml(dom, guest, disks=[gd.Disk(d / "root.qcow2", "vda"),
                                               gd.Disk(d / "data.qcow2", "vdb")],
                            macs=[], serial_log=d / "serial.log", memory_mib=GUEST[1],
                            writer="vdb", writer_delay_ms="5", marker="off", **options)
        agent.kill()
        subprocess.run([sys.executable, "-c", _DEFINE_AND_START,
                        embedded.embed_uri(agent.libvirt_root), xml],
                       check=True, timeout=WAIT, capture_output=True)
        agent.start()
        self.co.create_namespaced_custom_object(G, V, self.ns, "instances", {
            "apiVersion": f"{G}/{V}", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavor": self.flavor("guest"), "host": host,
                     "adopt": {"domainName": dom}}})
        st = dict(wait_for(lambda: (s := self.status("instances", name)).get(
            "phase") == "Active" and s, timeout=WAIT, what=f"Instance {name} Active"))
        gd.wait_serial(d / "serial.log", lambda g: g.ready is not None, timeout=WAIT,
                       what=f"{dom} booted")
        return st

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.co.patch_namespaced_custom_object(G, V, self.ns, "vmresizes", name,
                                               {"spec": spec})

    def tmpfs(self, instance: str, size: str) -> Path:
        """A tmpfs of ``size`` where hv2 will keep ``instance``'s disk (unmounted by heal)."""
        mount = self.agents[self.host(2)].storage_root / "instances" / self.ns / instance
        mount.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                       check=True)
        self.mounts.append(mount)
        self._unmounts.append(children.on_stop(f"tmpfs {mount}", lambda: subprocess.run(
            ["umount", "-l", str(mount)], check=False, capture_output=True)))
        return mount

    def delete(self, plural: str, name: str) -> None:
        with contextlib.suppress(Exception):
            self.co.delete_namespaced_custom_object(G, V, self.ns, plural, name)

    def allocations(self, consumers: set[str]) -> dict[str, dict[str, tuple[int, int, int]]]:
        """host -> "<Kind>/<consumer>" -> (vCPUs, MiB, GiB), for the given consumers only."""
        out: dict[str, dict[str, tuple[int, int, int]]] = {}
        for host in self.agents:
            for a in (self.status("hosts", host).get("allocations") or {}).values():
                if a.get("consumer") in consumers:
                    r = a["resources"]
                    out.setdefault(host, {})[f"{a['kind']}/{a['consumer']}"] = (
                        r.get("vcpus", 0), r.get("memoryMiB", 0), r.get("diskGiB", 0))
        return out

    def tail(self) -> str:
        parts = [f"--- operator\n{self.operator.tail(30)}" if self.operator else ""]
        parts += [f"--- {a.name}\n{a.log_tail(15)}" for a in self.agents.values()]
        return "\n".join(parts)


class Watcher(threading.Thread):
    """See the module docstring."""

    def __init__(self, stack: FaultStack, resize: str, inst: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.s, self.resize = stack, resize
        self.src = stack.agents[inst["host"]]
        self.src_dom, self.src_disk = inst["domainName"], self.src.storage_root / inst["diskPath"]
        self.phases: list[tuple[float, str]] = []
        self.st: dict[str, Any] = {}
        self.gone = False  # the VMResize no longer exists (after it was seen)
        self.t_off: float | None = None
        self.t_on: float | None = None
        self.sha_off: str | None = None
        self.both_ran = False
        self.dest: tuple[FaultAgent, str] | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                obj: dict[str, Any] | None = self.s.co.get_namespaced_custom_object(
                    G, V, self.s.ns, "vmresizes", self.resize)
            except ApiException as e:
                obj, self.gone = None, self.gone or (e.status == 404 and bool(self.phases))
            except Exception:
                obj = None
            if obj is not None:
                self.st = dict(obj.get("status") or {})
                phase = self.st.get("phase", "")
                if phase and (not self.phases or self.phases[-1][1] != phase):
                    self.phases.append((time.monotonic(), phase))
                if self.st.get("destHost") in self.s.agents and self.st.get("destDomainName"):
                    self.dest = (self.s.agents[self.st["destHost"]], self.st["destDomainName"])
            src_up, dst_up = self.running()
            self.both_ran |= src_up and dst_up
            if self.t_off is None and not (src_up or dst_up):
                self.t_off = time.monotonic()
                with contextlib.suppress(OSError):
                    self.sha_off = file_sha256(self.src_disk)
            elif self.t_off is not None and self.t_on is None and (src_up or dst_up):
                self.t_on = time.monotonic()
            self._halt.wait(0.1)

    def running(self) -> tuple[bool, bool]:
        src_up = qemu_pid(self.src, self.src_dom) is not None
        dst_up = self.dest is not None and qemu_pid(*self.dest) is not None
        return src_up, dst_up

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def phase(self) -> str:
        return str(self.st.get("phase", ""))

    def wait(self, *phases: str, timeout: float = WAIT, gone_ok: bool = False) -> str:
        """Wait for one of ``phases`` (or a terminal one); returns the phase reached."""
        def probe() -> str | None:
            if gone_ok and self.gone:
                return "Deleted"
            p = self.phase()
            return p if p in phases or p in TERMINAL else None
        try:
            return wait_for(probe, timeout=timeout, what=f"{self.resize} in {phases}",
                            interval=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}; phases {self.seen()}\n{self.s.tail()}") from None

    def seen(self) -> list[str]:
        return [p for _, p in self.phases]

    def downtime(self) -> float | None:
        if self.t_off is None:
            return 0.0
        return None if self.t_on is None else self.t_on - self.t_off


@dataclass
class Ctx:
    """What a cell's fault can reach."""

    s: FaultStack
    w: Watcher
    resize: str
    src: FaultAgent
    dst: FaultAgent
    verdict: str | None = "confirm"  # what to patch in VerifyResize; None: the fault did
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)

    def mid_copy(self, fraction: float = 0.3) -> None:
        assert self.dst.proxy is not None
        assert self.dst.proxy.wait_bytes(int((DATA_MIB << 20) * fraction), WAIT), \
            f"the copy never reached {fraction:.0%}; phases {self.w.seen()}\n{self.s.tail()}"

    def decide_now(self, verdict: str) -> None:
        assert self.w.wait("VerifyResize") == "VerifyResize", self.w.seen()
        self.s.patch_spec(self.resize, {verdict: True})
        self.verdict = None

    def host_ready(self, agent: FaultAgent) -> bool:  # what `kubectl get hosts` shows
        return bool(self.s.status("hosts", agent.name).get("ready"))


def until(probe: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``probe`` held, or None after ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if probe():
            return time.monotonic() - began
        time.sleep(0.2)
    return None
