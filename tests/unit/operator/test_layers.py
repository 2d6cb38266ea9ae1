"""The decision modules stay pure, and only the storage layer uses the Kubernetes client.

import-linter (``make lint``) holds the package order; this test holds the same lines per
file, so a new module dropped into the wrong folder fails here too, without the linter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[3] / "operator" / "vmresize" / "operator"
PURE = [*sorted((PKG / "decisions").glob("*.py")), PKG / "settings.py"]
FORBIDDEN = ("kopf", "kubernetes", "urllib3", "aiohttp", "prometheus_client", "libvirt",
             "asyncssh", "vmresize.operator.persistence", "vmresize.operator.reconcile",
             "vmresize.operator.handlers")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.stem)
def test_pure_module_imports(path: Path) -> None:
    bad = {n for n in _imports(path)
           if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
    assert bad == set()


def test_only_storage_uses_the_kubernetes_client() -> None:
    users = {str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
             if any(n.startswith("kubernetes") for n in _imports(p))}
    # The kubectl plugin is a process of its own, with its own one adapter.
    assert users == {"persistence/storage.py", "cli/kube.py"}


def test_every_module_has_a_docstring() -> None:
    for p in PKG.rglob("*.py"):
        assert ast.get_docstring(ast.parse(p.read_text())), p.name
