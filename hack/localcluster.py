#!/usr/bin/env python3
"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager.

Runs them on 127.0.0.1 the way controller-runtime's envtest does, from binaries that
``hack/build-control-plane.sh`` built and cached. It writes an admin kubeconfig
(client-certificate auth, ``O=system:masters``) and stops exactly the processes it
started, by PID.

    python3 hack/localcluster.py up --dir DIR     # starts, prints the kubeconfig path
    python3 hack/localcluster.py down --dir DIR   # stops what `up` started in DIR

Tests import :class:`LocalCluster` directly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hack import children

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.33.13")
REPO = Path(__file__).resolve().parent.parent
#: Bounded waits: a cold kube-apiserver on 2 shared cores is ready in ~5-15 s.
READY_TIMEOUT = 120.0


def cache_bin() -> Path:
    override = os.environ.get("VMRESIZE_K8S_BIN")
    if override:
        return Path(override)
    cache = Path(os.environ.get("VMRESIZE_CACHE", Path.home() / ".cache" / "vmresize"))
    return cache / f"k8s-{K8S_VERSION}" / "bin"


def ensure_binaries() -> Path:
    """Build the control plane once (a no-op when cached) and return its bin directory."""
    subprocess.run(["bash", str(REPO / "hack" / "build-control-plane.sh")], check=True,
                   stdout=sys.stderr)
    return cache_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1, admin and controller-manager clients."""
    d.mkdir(parents=True, exist_ok=True)
    if (d / "admin.crt").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "3650", "-subj", "/CN=vmresize-local-ca", cwd=d)
    (d / "serving.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1\n"
        "extendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    certs = {
        "serving": ("/CN=kube-apiserver", "serving.ext"),
        "admin": ("/O=system:masters/CN=vmresize-admin", "client.ext"),
        "kcm": ("/CN=system:kube-controller-manager", "client.ext"),
    }
    for name, (subj, ext) in certs.items():
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "3650", "-extfile", ext,
                 cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(server: str, pki: Path, user: str) -> str:
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki / f"{user}.crt"),
            "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }, indent=2)


@dataclass
class LocalCluster:
    """One control plane in ``workdir``. ``start()`` then ``stop()``; both are idempotent."""

    workdir: Path
    with_controller_manager: bool = True
    pids: dict[str, int] = field(default_factory=dict)
    server: str = ""
    argvs: dict[str, list[str]] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = children.track(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL,
                                               start_new_session=True))
        children.untrack(self.procs.get(name))
        self.procs[name] = proc
        self.pids[name] = proc.pid
        self.argvs[name] = argv
        (self.workdir / "pids.json").write_text(json.dumps(self.pids))

    def start(self) -> LocalCluster:
        binaries = ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            str(binaries / "etcd"), "--name", "local",
            "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"local=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(2 * 1024**3),
        ])
        self.server = f"https://127.0.0.1:{api_port}"
        p = self.pki
        self._spawn("kube-apiserver", [
            str(binaries / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={api_port}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--tls-cert-file={p / 'serving.crt'}", f"--tls-private-key-file={p / 'serving.key'}",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--authorization-mode=RBAC", "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true", "--disable-admission-plugins=ServiceAccount",
            f"--cert-dir={self.workdir / 'certs'}",
        ])
        self.kubeconfig.write_text(kubeconfig(self.server, p, "admin"))
        self._wait_ready()
        if self.with_controller_manager:
            kcm_config = self.workdir / "kcm.kubeconfig"
            kcm_config.write_text(kubeconfig(self.server, p, "kcm"))
            self._spawn("kube-controller-manager", [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={kcm_config}", "--use-service-account-credentials",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}", "--leader-elect=false",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                "--controllers=*,-nodeipam,-nodelifecycle,-service-lb-controller,-route",
            ])
        return self

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl(),  # noqa: S310
                                        timeout=5) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), b""
        except OSError:
            return 0, b""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise RuntimeError(f"{name} exited; see {self.workdir / (name + '.log')}")
            if self._get("/readyz")[0] == 200 and \
                    self._get("/api/v1/namespaces/default")[0] == 200:
                return
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready after {READY_TIMEOUT}s")

    def restart_apiserver(self, *, hard: bool = True) -> float:
        """Stop kube-apiserver alone (SIGKILL when ``hard``, else SIGTERM) and start it
        again with the same ports, certificates and etcd; returns the seconds it was away.

        etcd and the controller-manager keep running, as when a control-plane node
        reboots its API server: clients see refused connections, then the same server.
        """
        name = "kube-apiserver"
        pid = self.pids[name]
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
        deadline = began + READY_TIMEOUT
        while _alive(pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} (pid {pid}) did not exit")
            time.sleep(0.05)
        self._spawn(name, self.argvs[name])
        self._wait_ready()
        return time.monotonic() - began

    def stop(self) -> None:
        stop_pids(self.workdir)
        self.pids.clear()
        for proc in self.procs.values():
            children.untrack(proc)
            proc.poll()  # reaped: its PID is not ours any more
        self.procs.clear()


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_pids(workdir: Path, grace: float = 10.0) -> None:
    """SIGTERM the processes recorded in ``workdir/pids.json``, then SIGKILL stragglers."""
    record = workdir / "pids.json"
    if not record.exists():
        return
    pids: dict[str, int] = json.loads(record.read_text())
    for pid in reversed(list(pids.values())):
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    record.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description="local etcd + kube-apiserver")
    parser.add_argument("command", choices=["up", "down", "build"])
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "vmresize" / "dev")
    args = parser.parse_args()
    if args.command == "build":
        print(ensure_binaries())
    elif args.command == "up":
        cluster = LocalCluster(args.dir.resolve())
        stop_pids(cluster.workdir)
        cluster.start()
        print(cluster.kubeconfig)
    else:
        stop_pids(args.dir.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
