"""Run real ``python -m vmresize.agent`` processes for the tests, and stop them.

Each agent gets its own directory (storage root, state dir, embedded QEMU root, log) and
its own 127.0.0.x migration address (its metrics endpoint listens there too). Processes
are stopped by PID, never by name. For
``qemu:///embed`` the caller should itself be a child subreaper
(``vmresize.agent.hypervisor.embedded.become_subreaper`` + ``start_reaper``): QEMU
outlives a stopped agent (VMs survive agent restarts by design) and is re-parented to
it; ``kill_vms`` then ends those QEMUs by the PIDs the driver recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hack import children

from tests.support import REPO
from tests.support.kube import kubectl


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def write_migration_key(path: Path) -> Path:
    """A fresh shared migration client key (OpenSSH private key file, 0600)."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment="vmresize-migration")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.export_private_key("openssh"))
    path.chmod(0o600)
    return path


@dataclass
class AgentProcess:
    """One agent process (see the module docstring)."""

    name: str
    workdir: Path
    address: str
    kubeconfig: Path
    namespace: str
    key_file: Path
    embedded: bool = False
    heartbeat_seconds: float = 1.0
    port: int = 0
    #: Its Prometheus endpoint, on its own address; 0 picks a free port at the first start.
    metrics_port: int = 0
    libvirt_dir: Path | None = None
    #: A libvirt daemon's URI (``qemu+unix:///system?socket=…``, ``hack/libvirtd.py``);
    #: takes the place of the embedded root or the test driver.
    libvirt_uri: str | None = None
    stop_vms_on_exit: bool = False
    #: The test servers its health checks probe listen on loopback.
    health_probe_networks: str = "127.0.0.0/8"
    #: Python run in the agent's process before its main (e.g. a fault to inject).
    prelude: str | None = None
    #: More environment for the process (e.g. a clock skew for its stamps).
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _vms_cleanup: int | None = field(default=None, repr=False)

    @property
    def storage_root(self) -> Path:
        return self.workdir / "storage"

    @property
    def libvirt_root(self) -> Path:
        """A short path of its own: QEMU's socket paths under it must fit 108 bytes."""
        if self.libvirt_dir is None:
            self.libvirt_dir = Path(tempfile.mkdtemp(prefix="vr-", dir="/tmp"))
        return self.libvirt_dir

    @property
    def log_file(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def uri(self) -> str:
        if self.libvirt_uri is not None:
            return self.libvirt_uri
        return (f"qemu:///embed?root={self.libvirt_root}" if self.embedded
                else "test:///default")

    def argv(self) -> list[str]:
        start = (["-m", "vmresize.agent"] if self.prelude is None else
                 ["-c", f"{self.prelude}\nfrom vmresize.agent.main import main\nmain()"])
        return [sys.executable, *start, "--host-name", self.name,
                "--libvirt-uri", self.uri, "--storage-root", str(self.storage_root),
                "--state-dir", str(self.workdir / "state"),
                "--migration-address", self.address, "--migration-port", str(self.port),
                "--migration-key-file", str(self.key_file), "--namespace", self.namespace,
                "--kubeconfig", str(self.kubeconfig),
                "--heartbeat-seconds", str(self.heartbeat_seconds),
                "--metrics-address", self.address, "--metrics-port", str(self.metrics_port),
                "--health-probe-networks", self.health_probe_networks,
                *(["--stop-vms-on-exit"] if self.stop_vms_on_exit else [])]

    def start(self) -> AgentProcess:
        if not self.port:
            self.port = free_port(self.address)
        if not self.metrics_port:
            self.metrics_port = free_port(self.address)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_root.mkdir(exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = children.track(subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, **self.env} if self.env else None))
        if self.embedded and self._vms_cleanup is None:
            self._vms_cleanup = children.on_stop(f"QEMUs of agent {self.name}", self.kill_vms)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean stop), then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        children.untrack(self.proc)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        children.untrack(self.proc)
        self.proc = None

    def kill_vms(self) -> list[int]:
        """SIGKILL the QEMU processes of this agent's embedded root (after the agent stopped):
        its guests and libvirt's capabilities probe, found by the root's own path (a fresh
        mkdtemp of ours) on their command lines."""
        killed: list[int] = []
        if not self.embedded or self.libvirt_dir is None:  # a daemon's QEMUs are the daemon's
            return killed
        root = str(self.libvirt_root).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline.split(b"\0", 1)[0] and root + b"/" in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
        return killed

    def remove_libvirt_root(self) -> None:
        """Delete the embedded root (after :meth:`stop` and :meth:`kill_vms`)."""
        children.done(self._vms_cleanup)
        self._vms_cleanup = None
        if self.libvirt_dir is not None:
            shutil.rmtree(self.libvirt_dir, ignore_errors=True)
            self.libvirt_dir = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_agents(agents: Iterable[AgentProcess], kubeconfig: Path | None = None) -> None:
    """The teardown every multi-agent fixture needs: stop each agent (by PID), kill the
    QEMUs it leaves behind, delete its embedded root; with ``kubeconfig``, delete its Host
    too (cluster-scoped, so no namespace deletion takes it away)."""
    for agent in agents:
        agent.stop()
        agent.kill_vms()
        agent.remove_libvirt_root()
        if kubeconfig is not None:
            kubectl(kubeconfig, "delete", "hosts.vmresize.io", agent.name,
                    "--ignore-not-found", "--wait=false", check=False)
