"""Every public function, class and method of the three packages has a docstring.

Walks the source with ``ast`` (nothing is imported), so a module that cannot be imported in
a unit test is still checked. Module docstrings say what the module owns; signatures are
documented on the functions themselves, so a "Public API::" list copied into a module
docstring (which drifts from the code) fails too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("api/vmresize/api", "operator/vmresize/operator", "agent/vmresize/agent")

# Methods that override a callback of a third-party base class: the base class documents
# when it calls them, and the override's name is fixed by that base.
OVERRIDES: dict[str, str] = {
    # DiskSession(asyncssh.SSHServerSession): channel callbacks asyncssh calls.
    "connection_made": "asyncssh SSHServerSession/SSHServer callback",
    "connection_lost": "asyncssh SSHServerSession/SSHServer callback",
    "data_received": "asyncssh SSHServerSession callback",
    "eof_received": "asyncssh SSHServerSession callback",
    "break_received": "asyncssh SSHServerSession callback",
    "pty_requested": "asyncssh SSHServerSession callback",
    "shell_requested": "asyncssh SSHServerSession callback",
    "exec_requested": "asyncssh SSHServerSession callback",
    "subsystem_requested": "asyncssh SSHServerSession callback",
    # The migration server's SSH policy (asyncssh.SSHServer), private today.
    "password_auth_supported": "asyncssh SSHServer callback",
    "kbdint_auth_supported": "asyncssh SSHServer callback",
    "host_based_auth_supported": "asyncssh SSHServer callback",
    "public_key_auth_supported": "asyncssh SSHServer callback",
    "session_requested": "asyncssh SSHServer callback",
    "connection_requested": "asyncssh SSHServer callback",
    "server_requested": "asyncssh SSHServer callback",
    "unix_connection_requested": "asyncssh SSHServer callback",
    "unix_server_requested": "asyncssh SSHServer callback",
}

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _modules() -> Iterator[Path]:
    for root in ROOTS:
        yield from sorted((REPO / root).rglob("*.py"))


def _is_overload(node: FunctionNode) -> bool:
    for deco in node.decorator_list:
        name = deco.attr if isinstance(deco, ast.Attribute) else getattr(deco, "id", "")
        if name == "overload":
            return True
    return False


def _public(name: str) -> bool:
    return not name.startswith("_")


def _undocumented(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, qualified name) of each public definition without a docstring."""
    for node in tree.body:
        if isinstance(node, FunctionNode) and _public(node.name) and not _is_overload(node):
            if ast.get_docstring(node) is None:
                yield node.lineno, node.name
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            if ast.get_docstring(node) is None:
                yield node.lineno, node.name
            for item in node.body:
                if not isinstance(item, FunctionNode) or not _public(item.name):
                    continue  # dunder and private methods are left out
                if _is_overload(item) or item.name in OVERRIDES:
                    continue
                if ast.get_docstring(item) is None:
                    yield item.lineno, f"{node.name}.{item.name}"


def _problems() -> tuple[list[str], int]:
    problems: list[str] = []
    checked = 0
    for path in _modules():
        rel = path.relative_to(REPO)
        tree = ast.parse(path.read_text(), filename=str(rel))
        if "Public API::" in (ast.get_docstring(tree) or ""):
            problems.append(f"{rel}: module docstring copies signatures ('Public API::')")
        for line, name in _undocumented(tree):
            problems.append(f"{rel}:{line}: {name} has no docstring")
        checked += 1
    return problems, checked


def test_public_definitions_have_docstrings() -> None:
    problems, checked = _problems()
    assert checked > 0, f"no modules found under {ROOTS}"
    assert problems == [], f"{len(problems)} problems:\n" + "\n".join(problems)


def test_checker_finds_a_missing_docstring() -> None:
    source = (
        "def f():\n    '''Doc.'''\n"
        "def g(): pass\n"
        "class C:\n    '''Doc.'''\n    def m(self): pass\n    def _p(self): pass\n"
        "    def __init__(self): pass\n    def connection_made(self, c): pass\n"
        "class _Private:\n    def m(self): pass\n"
    )
    assert list(_undocumented(ast.parse(source))) == [(3, "g"), (6, "C.m")]
