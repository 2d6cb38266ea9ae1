"""The Helm chart in tests: the real helm binary, a release's names, ServiceAccount tokens.

:class:`Helm` runs the helm binary of the control-plane cache with a private home;
:func:`installed_release` installs deploy/helm/vmresize into a fresh namespace and
uninstalls it afterwards; a :class:`Release` names what that install created and answers
``kubectl auth can-i`` as its ServiceAccounts; :func:`token_kubeconfig` turns a token into
a kubeconfig for the same server, so a test can act with nothing but the chart's RBAC.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO
from tests.support.kube import kubectl
from vmresize.api.meta import API_VERSION

CHART = REPO / "deploy" / "helm" / "vmresize"
TEMPLATES = CHART / "templates"
#: Every helm call is bounded; an install that does not wait for pods takes ~1 s.
HELM_TIMEOUT = 120
#: A new ValidatingAdmissionPolicy is enforced once the API server's informer has it,
#: usually within a second; wait at most this long for that.
POLICY_SYNC_SECONDS = 30.0

#: A Host as an agent registers it; ``.format(name=...)`` fills it in.
HOST = f"apiVersion: {API_VERSION}\n" + """kind: Host
metadata:
  name: {name}
spec: {{}}
"""


class Helm:
    """The real helm binary with its config, cache and data kept in a temporary home."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data")}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              env=self.env, timeout=HELM_TIMEOUT)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
        return proc

    def template(self, *args: str, release: str = "vmresize",
                 namespace: str = "vmresize-system") -> list[dict[str, Any]]:
        out = self.run("template", release, str(CHART), "-n", namespace, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one rendered object of ``kind`` (and ``name``); fails unless exactly one."""
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def container_env(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The env entries, by name, of the first container of the one rendered ``kind``."""
    c = find(docs, kind)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in c["env"]}


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    config: Path

    @property
    def agent(self) -> str:
        return f"{self.name}-vmresize-agent"

    @property
    def operator(self) -> str:
        return f"{self.name}-vmresize-operator"

    @property
    def key_secret(self) -> str:
        return f"{self.name}-vmresize-migration-key"

    def sa_user(self, sa: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{sa}"

    def can(self, sa: str, *args: str) -> bool:
        """``kubectl auth can-i`` as the ServiceAccount ``sa`` of this release."""
        proc = kubectl(self.config, "auth", "can-i", f"--as={self.sa_user(sa)}", *args,
                       check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stderr
        return answer == "yes"


@contextmanager
def installed_release(helm: Helm, kubeconfig: Path) -> Iterator[Release]:
    """The chart installed into a fresh namespace of a cluster whose CRDs are applied
    already (crds.enabled=false); uninstalled, and the namespace deleted, afterwards."""
    rel = Release(f"r{uuid.uuid4().hex[:8]}", f"vmresize-{uuid.uuid4().hex[:8]}", kubeconfig)
    common = [f"--kubeconfig={kubeconfig}", "-n", rel.namespace]
    try:
        helm.run("install", rel.name, str(CHART), *common, "--create-namespace",
                 "--set", "crds.enabled=false", "--timeout", "60s")
        yield rel
    finally:
        helm.run("uninstall", rel.name, *common, "--wait", "--timeout", "60s", check=False)
        kubectl(kubeconfig, "delete", "namespace", rel.namespace, "--wait=false", check=False)


def token_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the same server as ``admin`` that authenticates with ``token``."""
    view = json.loads(kubectl(admin, "config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = view["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data")
    if ca is None:
        ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cluster["server"],
                                               "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))
    return path


def eventually(attempt: Callable[[], subprocess.CompletedProcess[str]],
               done: Callable[[subprocess.CompletedProcess[str]], bool]
               ) -> subprocess.CompletedProcess[str]:
    """Repeat ``attempt`` until ``done`` (bounded by POLICY_SYNC_SECONDS); the last result.

    Not :func:`tests.support.polling.wait_for`: the caller asserts on the last result
    itself, so a policy that never takes effect fails with the API server's own answer.
    """
    deadline = time.monotonic() + POLICY_SYNC_SECONDS
    while True:
        result = attempt()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)
