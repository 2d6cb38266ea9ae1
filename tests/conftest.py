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
from hack.localcluster import LocalCluster

from tests.support import REPO
from tests.support.kube import kubectl


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Path of an admin kubeconfig for a real API server with the CRDs Established."""
    named = os.environ.get("VMRESIZE_KUBECONFIG")
    if named:
        path = Path(named)
        cluster = None
    else:
        cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
        path = cluster.kubeconfig
    try:
        kubectl(path, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl(path, "wait", "--for=condition=Established", "--timeout=60s",
                "-f", str(REPO / "crds"))
        yield path
    finally:
        if cluster is not None:
            cluster.stop()


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
