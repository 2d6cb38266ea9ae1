"""The chart installed into real API servers by the real helm binary.

The shared session cluster, where the CRDs were already applied from crds/ (so the chart
installs with crds.enabled=false), and a private one for the chart's own CRDs, their keep
policy and kopf peering.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack.localcluster import LocalCluster
from tests.support import REPO
from tests.support.chart import CHART, Helm
from tests.support.kube import kubectl


def _release_name() -> str:
    return f"r{uuid.uuid4().hex[:8]}"


def _secret_key(config: Path, ns: str, name: str) -> str:
    out = kubectl(config, "get", "secret", name, "-n", ns, "-o",
                  "jsonpath={.data.id_ed25519}").stdout
    return base64.b64decode(out).decode()


def test_install_upgrade_uninstall_on_the_session_cluster(helm: Helm, kubeconfig: Path) -> None:
    """The session's CRDs come from crds/, so the chart installs with crds.enabled=false."""
    asyncssh = pytest.importorskip("asyncssh")
    release, ns = _release_name(), f"vmresize-{uuid.uuid4().hex[:8]}"
    base = [f"--kubeconfig={kubeconfig}", "-n", ns, "--set", "crds.enabled=false",
            "--timeout", "60s"]
    try:
        helm.run("install", release, str(CHART), "--create-namespace", *base)
        status = json.loads(helm.run("status", release, "-o", "json", *base[:3]).stdout)
        assert status["info"]["status"] == "deployed"
        names = kubectl(kubeconfig, "get", "deploy,ds,sa,secret,svc,role,rolebinding", "-n",
                        ns, "-o", "name").stdout.split()
        prefix = f"{release}-vmresize"
        for expected in (f"deployment.apps/{prefix}-operator", f"daemonset.apps/{prefix}-agent",
                         f"serviceaccount/{prefix}-operator", f"serviceaccount/{prefix}-agent",
                         f"secret/{prefix}-migration-key", f"service/{prefix}-operator-metrics"):
            assert expected in names
        key = _secret_key(kubeconfig, ns, f"{prefix}-migration-key")
        imported = asyncssh.import_private_key(key)
        assert imported.get_algorithm() == "ssh-ed25519"

        helm.run("upgrade", release, str(CHART), *base,
                 "--set", "operator.settings.maxAttempts=5")
        assert _secret_key(kubeconfig, ns, f"{prefix}-migration-key") == key
        env = kubectl(kubeconfig, "get", "deploy", f"{prefix}-operator", "-n", ns, "-o",
                      "jsonpath={.spec.template.spec.containers[0].env}").stdout
        assert {"name": "VMRESIZE_MAX_ATTEMPTS", "value": "5"} in json.loads(env)
    finally:
        helm.run("uninstall", release, *base[:3], "--wait", "--timeout", "60s", check=False)
        kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false", check=False)
    left = kubectl(kubeconfig, "get", "clusterroles,validatingadmissionpolicies", "-o",
                   "name").stdout
    assert release not in left


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[Path]:
    """A control plane of its own, for the chart's own CRDs (the session's are kubectl's)."""
    cluster = LocalCluster(tmp_path / "cluster").start()
    try:
        yield cluster.kubeconfig
    finally:
        cluster.stop()


def test_install_with_crds_keep_and_peering(helm: Helm, private_cluster: Path) -> None:
    config = private_cluster
    base = [f"--kubeconfig={config}", "-n", "vmresize-system", "--timeout", "60s"]
    helm.run("install", "vmresize", str(CHART), "--create-namespace", *base)
    crds = [p.name.removesuffix(".yaml") for p in (REPO / "crds").glob("*.yaml")]
    kubectl(config, "wait", "--for=condition=Established", "--timeout=60s",
            *[f"crd/{c}" for c in crds])
    # HA: kopf's peering CRD comes with the upgrade, the peering object with its hook.
    helm.run("upgrade", "vmresize", str(CHART), *base, "--set", "operator.replicaCount=2")
    peering = json.loads(kubectl(config, "get", "clusterkopfpeering", "vmresize-operator",
                                 "-o", "json").stdout)
    assert peering["kind"] == "ClusterKopfPeering"
    args = kubectl(config, "get", "deploy", "vmresize-operator", "-n", "vmresize-system", "-o",
                   "jsonpath={.spec.template.spec.containers[0].args}").stdout
    assert "--peering=vmresize-operator" in json.loads(args)
    helm.run("uninstall", "vmresize", *base[:3], "--wait", "--timeout", "60s")
    # crds.keep: the CRDs (and so every user object) outlive the release.
    left = kubectl(config, "get", "crd", "-o", "name").stdout.split()
    for c in crds:
        assert f"customresourcedefinition.apiextensions.k8s.io/{c}" in left
    assert kubectl(config, "get", "deploy", "-n", "vmresize-system", "-o",
                   "name").stdout.strip() == ""
