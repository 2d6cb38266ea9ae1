"""``kubectl vmresize start`` with a health check, as a subprocess against a real API server:
the VMResize it creates carries ``spec.autoConfirm``, and a bad check is refused by the API
server with its own message (exit status 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.kube import kubectl_json

PLUGIN = Path(sys.executable).with_name("kubectl-vmresize")


def run(kubeconfig: Path, ns: str, *args: str) -> tuple[int, str, str]:
    """The plugin with ``KUBECONFIG``; (status, stdout, stderr)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    p = subprocess.run([str(PLUGIN), *args, "-n", ns], env=env, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_start_with_a_health_check(kubeconfig: Path, namespace: str) -> None:
    rc, out, err = run(kubeconfig, namespace, "start", "web", "--flavor", "big", "--name",
                       "r1", "--health-http", "http://10.0.0.5:8080/healthz",
                       "--health-window", "90")
    assert rc == 0, out + err
    assert "vmresize.vmresize.io/r1 created" in out
    stored = kubectl_json(kubeconfig, "-n", namespace, "get", "vmresize", "r1")
    assert stored is not None
    assert stored["spec"]["autoConfirm"] == {
        "check": {"http": {"host": "10.0.0.5", "port": 8080, "path": "/healthz"}},
        "windowSeconds": 90, "periodSeconds": 2}


def test_a_check_the_api_server_refuses(kubeconfig: Path, namespace: str) -> None:
    rc, out, err = run(kubeconfig, namespace, "start", "web", "--flavor", "big", "--name",
                       "r1", "--health-tcp", "10.0.0.5:70000")
    assert rc == 5, out + err
    assert "spec.autoConfirm.check.tcp.port" in err
