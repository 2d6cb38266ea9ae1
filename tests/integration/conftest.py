"""Everything under tests/integration talks to a real kube-apiserver.

Fixtures of the chart tests (test_helm_*, test_rbac_*): the real helm binary and one
release of the chart per module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack.localcluster import ensure_binaries
from tests.support.chart import Helm, Release, installed_release
from tests.support.kube import kubectl


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(ensure_binaries() / "helm", tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def release(helm: Helm, kubeconfig: Path) -> Iterator[Release]:
    """The chart installed into its own namespace of the session cluster, one per module."""
    with installed_release(helm, kubeconfig) as rel:
        yield rel


@pytest.fixture
def nodes(release: Release) -> Iterator[tuple[str, str]]:
    """Two Node objects (no kubelet: just API objects a token can be bound to)."""
    names = (f"hv-{uuid.uuid4().hex[:6]}", f"hv-{uuid.uuid4().hex[:6]}")
    for n in names:
        kubectl(release.config, "create", "-f", "-",
                stdin=f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n")
    yield names
    kubectl(release.config, "delete", "node", *names, "--wait=false", check=False)
    kubectl(release.config, "delete", "host", *names, "--ignore-not-found", "--wait=false",
            check=False)
