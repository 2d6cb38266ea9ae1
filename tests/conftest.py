"""Shared fixtures: a real Kubernetes API for the integration and e2e tiers.

The session starts its own etcd + kube-apiserver (+ controller-manager) from the cached
binaries (``hack/localcluster.py``), unless ``VMRESIZE_KUBECONFIG`` names an existing
cluster (kind, a real one): then the tests run there, each in its own namespace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack import children
from hack.localcluster import LocalCluster

from tests.support import REPO
from tests.support.kube import kubectl


def pytest_configure(config: pytest.Config) -> None:
    """SIGINT or SIGTERM stops every daemon the run started, by PID, within seconds."""
    children.install()


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster | None]:
    """The session's own control plane, or None when ``VMRESIZE_KUBECONFIG`` names one.

    Fault tests use it to restart kube-apiserver; everything else uses ``kubeconfig``.
    """
    if os.environ.get("VMRESIZE_KUBECONFIG"):
        yield None
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: LocalCluster | None) -> Path:
    """Path of an admin kubeconfig for a real API server with the CRDs Established."""
    path = (local_cluster.kubeconfig if local_cluster is not None
            else Path(os.environ["VMRESIZE_KUBECONFIG"]))
    kubectl(path, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(path, "wait", "--for=condition=Established", "--timeout=60s",
            "-f", str(REPO / "crds"))
    return path


@pytest.fixture
def namespace(kubeconfig: Path) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl(kubeconfig, "create", "namespace", name)
    yield name
    kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path):  # type: ignore[no-untyped-def]
    """A kubernetes.client.ApiClient for the test cluster."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))
