"""The decision modules stay pure: no Kubernetes client, no kopf, no I/O libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[3] / "operator" / "vmresize" / "operator"
PURE = ["lifecycle", "lifecycle_types", "transitions", "scheduler", "conditions", "settings",
        "views"]
FORBIDDEN = ("kopf", "kubernetes", "urllib3", "aiohttp", "prometheus_client", "libvirt",
             "asyncssh", "vmresize.operator.storage", "vmresize.operator.engine")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports(module: str) -> None:
    bad = {n for n in _imports(PKG / f"{module}.py")
           if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
    assert bad == set()


def test_only_storage_uses_the_kubernetes_client() -> None:
    users = {p.stem for p in PKG.glob("*.py")
             if any(n.startswith("kubernetes") for n in _imports(p))}
    assert users == {"storage"}


def test_every_module_has_a_docstring() -> None:
    for p in PKG.glob("*.py"):
        assert ast.get_docstring(ast.parse(p.read_text())), p.name
