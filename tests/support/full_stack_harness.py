"""The whole stack for the full-stack e2e tier: the real operator and three real agents.

:class:`Stack` owns one namespace (the operator's HostTask namespace, the only one it
watches, and where the test's Instances and VMResizes live), three embedded-QEMU agents on
127.0.0.2-4 (each one simulated hypervisor host), two Flavors that select only those three
Hosts, and the operator process. Everything it starts is stopped by PID in :meth:`close`,
and every cluster-scoped object it created (Hosts, Flavors) is deleted. With
``libvirt_uris`` it runs one agent per libvirt daemon (``hack/libvirtd.py``) instead, each
with its own daemon and storage root.

It also holds the ground-truth probes the tests use: the QEMU process of a domain (its
argv, from the embedded root's ``run/qemu/<domain>.pid``), whether a domain is defined
(``etc/qemu/<domain>.xml``), and what a guest sees of a disk (sha256 of its raw content).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.agent_harness import AgentProcess, stop_agents, write_migration_key
from tests.support.kube import kubectl, kubectl_json
from tests.support.op_harness import Operator
from tests.support.polling import wait_for
from vmresize.api.meta import API_VERSION, GROUP

WAIT = 180.0  # TCG on 2 shared cores; a bound on every wait, not a performance assertion
GIB = 1024**3
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
SELECTOR_LABEL = f"{GROUP}/test"
FLAVORS = {  # short name: (vcpus, memoryMiB, diskGiB); tiny, so TCG guests start fast
    "small": (1, 64, 1),
    "big": (2, 128, 2),
}
BAD_END = ("Failed", "RolledBack", "RollbackFailed")


def qemu_pid(agent: AgentProcess, domain: str) -> int | None:
    """PID of the live QEMU process running ``domain`` on ``agent``'s embedded root."""
    try:
        pid = int((agent.libvirt_root / "run" / "qemu" / f"{domain}.pid").read_text().strip())
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"qemu-system" in raw and state != "Z" else None


def qemu_args(agent: AgentProcess, domain: str) -> list[str] | None:
    """The argv of the QEMU process running ``domain`` on ``agent``, if one runs."""
    pid = qemu_pid(agent, domain)
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").rstrip("\0").split("\0")


def qemu_vcpus_mib(argv: list[str]) -> tuple[int, int]:
    """vCPUs and RAM MiB from QEMU's ``-smp N[,…]`` and ``-m [size=]N[k|M|G]``."""
    smp = argv[argv.index("-smp") + 1].split(",")[0]
    mem = argv[argv.index("-m") + 1].split(",")[0].removeprefix("size=")
    scale = {"k": 1 / 1024, "K": 1 / 1024, "M": 1, "G": 1024}
    mib = (float(mem[:-1]) * scale[mem[-1]]) if mem[-1] in scale else float(mem)
    return int(smp.removeprefix("cpus=")), int(mib)


def domain_defined(agent: AgentProcess, domain: str) -> bool:
    """The embedded driver keeps a defined domain's XML in ``<root>/etc/qemu/``."""
    return (agent.libvirt_root / "etc" / "qemu" / f"{domain}.xml").exists()


def virtual_size(disk: Path, fmt: str = "qcow2") -> int:
    """Virtual size of ``disk`` read as ``fmt`` (never probed; instance root disks are qcow2)."""
    out = subprocess.run(["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(disk)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return int(json.loads(out)["virtual-size"])


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_sha256(disk: Path, length: int) -> str:
    """sha256 of the first ``length`` bytes the guest sees (raw content, not qcow2 bytes).

    ``-U`` reads a disk a running QEMU holds. The raw copy is sparse, so it is cheap.
    """
    with tempfile.TemporaryDirectory(prefix="vr-fs-") as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O", "raw",
                        str(disk), str(raw)], check=True, timeout=120)
        assert raw.stat().st_size >= length, f"{disk} holds less than {length} bytes"
        h = hashlib.sha256()
        left = length
        with raw.open("rb") as f:
            while left:
                chunk = f.read(min(left, 8 << 20))
                assert chunk, f"short read of {raw}"
                h.update(chunk)
                left -= len(chunk)
        return h.hexdigest()


@dataclass
class Stack:
    """See the module docstring."""

    kubeconfig: Path
    workdir: Path
    ns: str = field(default_factory=lambda: f"fs-{uuid.uuid4().hex[:8]}")
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    flavors: list[str] = field(default_factory=list)
    operator: Operator | None = None
    #: One agent per URI of a libvirt daemon (``hack/libvirtd.py``), instead of three
    #: embedded-QEMU agents.
    libvirt_uris: tuple[str, ...] = ()
    #: The operator's VMRESIZE_POWER_OFF_TIMEOUT_SECONDS: 1 forces a guest without an OS
    #: off at once; a guest that answers ACPI needs a bound it can meet.
    power_off_timeout: int = 1

    def flavor(self, short: str) -> str:
        return f"{self.ns}-{short}"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Stack:
        kubectl(self.kubeconfig, "create", "namespace", self.ns)
        key = write_migration_key(self.workdir / "migration_key")
        uris = self.libvirt_uris or (None,) * len(ADDRESSES)
        for i, (address, uri) in enumerate(zip(ADDRESSES, uris, strict=False), 1):
            name = f"{self.ns}-hv{i}"
            self.agents[name] = AgentProcess(
                name=name, workdir=self.workdir / name, address=address,
                kubeconfig=self.kubeconfig, namespace=self.ns, key_file=key,
                embedded=uri is None, libvirt_uri=uri).start()
        for name, agent in self.agents.items():
            # Hosts are cluster-scoped: the label is how this run's Flavors pick only them.
            wait_for(lambda a=agent: self._alive(a) and kubectl_json(  # type: ignore[misc]
                self.kubeconfig, "get", "hosts.vmresize.io", a.name),
                timeout=WAIT, what=f"Host {name} registered")
            kubectl(self.kubeconfig, "label", "hosts.vmresize.io", name,
                    f"{SELECTOR_LABEL}={self.ns}", "--overwrite")
        for name, agent in self.agents.items():
            wait_for(lambda a=agent: self._alive(a) and (kubectl_json(  # type: ignore[misc]
                self.kubeconfig, "get", "hosts.vmresize.io", a.name) or {}).get(
                "status", {}).get("ready"), timeout=WAIT, what=f"Host {name} ready")
        for short, (vcpus, mib, gib) in FLAVORS.items():
            name = self.flavor(short)
            self.flavors.append(name)
            self.apply({"apiVersion": API_VERSION, "kind": "Flavor",
                        "metadata": {"name": name},
                        "spec": {"vcpus": vcpus, "memoryMiB": mib, "diskGiB": gib,
                                 "extraSpecs": {f"aggregate_instance_extra_specs:"
                                                f"{SELECTOR_LABEL}": self.ns}}})
        self.operator = Operator(self.kubeconfig, self.ns, self.workdir / "operator.log",
                                 VMRESIZE_POWER_OFF_TIMEOUT_SECONDS=str(
                                     self.power_off_timeout)).start()
        return self

    def close(self) -> None:
        """Stop the operator, the agents and their QEMUs (by PID); delete what we created."""
        if self.operator is not None:
            self.operator.stop()
        stop_agents(self.agents.values(), self.kubeconfig)
        # Nobody is left to remove the finalizers: strip them, so the namespace can go.
        for kind in ("vmresizes.vmresize.io", "instances.vmresize.io", "hosttasks.vmresize.io"):
            for obj in (kubectl_json(self.kubeconfig, "-n", self.ns, "get", kind) or {}).get(
                    "items", []):
                kubectl(self.kubeconfig, "-n", self.ns, "patch", kind,
                        obj["metadata"]["name"], "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)
        kubectl(self.kubeconfig, "delete", "namespace", self.ns, "--wait=false", check=False)
        for name in self.flavors:
            kubectl(self.kubeconfig, "delete", "flavors.vmresize.io", name,
                    "--ignore-not-found", "--wait=false", check=False)

    def _alive(self, agent: AgentProcess) -> bool:
        if not agent.alive():
            raise AssertionError(f"agent {agent.name} exited:\n{agent.log_tail()}")
        if self.operator is not None and (self.operator.proc is None
                                          or self.operator.proc.poll() is not None):
            raise AssertionError(f"the operator exited:\n{self.operator.tail()}")
        return True

    # -- the API ----------------------------------------------------------------------

    def apply(self, body: dict[str, Any]) -> None:
        kubectl(self.kubeconfig, "create", "-f", "-", stdin=json.dumps(body))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        doc = kubectl_json(self.kubeconfig, "-n", self.ns, "get", f"{kind}.vmresize.io", name)
        return doc or {}

    def status(self, kind: str, name: str) -> dict[str, Any]:
        st: dict[str, Any] = self.get(kind, name).get("status") or {}
        return st

    def wait_status(self, kind: str, name: str, phase: str,
                    bad: tuple[str, ...] = ()) -> dict[str, Any]:
        """Wait (bounded) for ``phase``; fail at once on a phase in ``bad``, with the logs."""
        def probe() -> dict[str, Any] | None:
            for agent in self.agents.values():
                self._alive(agent)
            st = self.status(kind, name)
            if st.get("phase") in bad:
                raise AssertionError(f"{kind} {name} ended {st.get('phase')}: "
                                     f"{st.get('message')}\n{self.diagnostics()}")
            return st if st.get("phase") == phase else None
        try:
            return wait_for(probe, timeout=WAIT, what=f"{kind} {name} {phase}", interval=0.5)
        except AssertionError as e:
            if "\n--- " in str(e):
                raise
            raise AssertionError(f"{e}\n{self.diagnostics()}") from None

    def task(self, owner: str, action: str) -> dict[str, Any]:
        """The one HostTask ``action`` of the VMResize (or Instance) named ``owner``."""
        items = (kubectl_json(self.kubeconfig, "-n", self.ns, "get", "hosttasks.vmresize.io")
                 or {}).get("items", [])
        found = [t for t in items if t["spec"]["action"] == action
                 and t["spec"]["owner"] == f"{self.ns}/{owner}"]
        assert len(found) == 1, f"{len(found)} {action} tasks of {owner}\n{self.diagnostics()}"
        return found[0]

    def claims(self) -> dict[str, dict[str, tuple[int, int, int]]]:
        """Every host's allocations of this namespace: host -> key -> (vCPUs, MiB, GiB)."""
        out: dict[str, dict[str, tuple[int, int, int]]] = {}
        for name in self.agents:
            st = (kubectl_json(self.kubeconfig, "get", "hosts.vmresize.io", name) or {}).get(
                "status", {})
            # Claims are keyed by the holder's UID; ``kind/consumer`` names it for people.
            out[name] = {f"{a.get('kind')}/{a.get('consumer')}": (
                r.get("vcpus", 0), r.get("memoryMiB", 0), r.get("diskGiB", 0))
                for a in (st.get("allocations") or {}).values()
                if str(a.get("consumer", "")).startswith(f"{self.ns}/")
                for r in [a["resources"]]}
        return out

    def create_instance(self, name: str, flavor: str, seed: str) -> dict[str, Any]:
        self.apply({"apiVersion": API_VERSION, "kind": "Instance",
                    "metadata": {"name": name, "namespace": self.ns},
                    "spec": {"flavor": self.flavor(flavor), "image": {"seedPattern": seed},
                             "interfaces": [{"type": "user"}]}})
        return self.wait_status("instances", name, "Active", bad=("Error",))

    def resize(self, name: str, instance: str, flavor: str | None) -> dict[str, Any]:
        """Create a VMResize (no flavor: a cold migration) and wait for VerifyResize."""
        spec: dict[str, Any] = {"instanceName": instance}
        if flavor:
            spec["flavor"] = self.flavor(flavor)
        self.apply({"apiVersion": API_VERSION, "kind": "VMResize",
                    "metadata": {"name": name, "namespace": self.ns}, "spec": spec})
        return self.wait_status("vmresizes", name, "VerifyResize", bad=BAD_END)

    def decide(self, name: str, verdict: str) -> dict[str, Any]:
        """``confirm`` or ``revert`` a resize in VerifyResize; wait until it ends."""
        kubectl(self.kubeconfig, "-n", self.ns, "patch", "vmresizes.vmresize.io", name,
                "--type=merge", "-p", json.dumps({"spec": {verdict: True}}))
        end = {"confirm": "Confirmed", "revert": "Reverted"}[verdict]
        return self.wait_status("vmresizes", name, end, bad=BAD_END)

    def diagnostics(self) -> str:
        parts = []
        for kind in ("vmresizes", "instances", "hosttasks"):
            with contextlib.suppress(Exception):
                out = kubectl(self.kubeconfig, "-n", self.ns, "get", f"{kind}.vmresize.io",
                              "-o", "wide", check=False).stdout
                parts.append(f"--- {kind}\n{out}")
        if self.operator is not None:
            parts.append(f"--- operator log\n{self.operator.tail(40)}")
        for agent in self.agents.values():
            parts.append(f"--- agent {agent.name} log\n{agent.log_tail(25)}")
        return "\n".join(parts)
