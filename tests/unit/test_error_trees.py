"""One error tree per process: every exception class the agent defines descends from
``AgentError``, every one the operator defines from ``OperatorError``, every one the kubectl
plugin defines from ``PluginError``; no two share a name
within a process or across the two; the agent's tree, as drawn in its module docstring, is
the tree in the code; and the agent's bottom layer imports no third-party library."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import kopf
import pytest

import vmresize.agent
import vmresize.operator
from vmresize.agent import errors as agent_errors
from vmresize.agent.errors import AgentError
from vmresize.operator import cli
from vmresize.operator.cli.kube import PluginError
from vmresize.operator.errors import ApiAlreadyExistsError, OperatorError


def _modules(package: ModuleType) -> list[ModuleType]:
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        found.append(importlib.import_module(info.name))
    return found


def _exception_classes(package: ModuleType) -> list[type[BaseException]]:
    """Every exception class *defined* (not merely imported) in one of the package's modules."""
    return [cls for mod in _modules(package) for _, cls in inspect.getmembers(mod, inspect.isclass)
            if cls.__module__ == mod.__name__ and issubclass(cls, BaseException)]


AGENT = _exception_classes(vmresize.agent)
PLUGIN = _exception_classes(cli)
OPERATOR = [c for c in _exception_classes(vmresize.operator) if c not in PLUGIN]


def test_the_walk_sees_the_trees() -> None:
    # a walk that found nothing would make every test below pass
    assert len(AGENT) >= 25
    assert len(OPERATOR) >= 6
    assert {c.__module__ for c in AGENT} == {"vmresize.agent.errors"}


@pytest.mark.parametrize(("classes", "root"), [(AGENT, AgentError), (OPERATOR, OperatorError),
                                               (PLUGIN, PluginError)],
                         ids=["agent", "operator", "plugin"])
def test_one_root_per_process(classes: list[type[BaseException]], root: type) -> None:
    assert [c.__qualname__ for c in classes if not issubclass(c, root)] == []


@pytest.mark.parametrize("classes", [AGENT, OPERATOR, PLUGIN, AGENT + OPERATOR + PLUGIN],
                         ids=["agent", "operator", "plugin", "across"])
def test_no_two_exceptions_share_a_name(classes: list[type[BaseException]]) -> None:
    names = [c.__name__ for c in classes]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_every_operator_error_tells_kopf_whether_to_retry() -> None:
    undecided = {c for c in OPERATOR if c is not OperatorError
                 and not issubclass(c, kopf.TemporaryError | kopf.PermanentError)}
    assert undecided == {ApiAlreadyExistsError}  # storage.create_task treats it as done


def test_retryable_is_a_class_default_with_an_instance_override() -> None:
    for cls in AGENT:
        assert isinstance(cls.retryable, bool), cls  # type: ignore[attr-defined]
    assert not AgentError("x").retryable
    assert AgentError("x", retryable=True).retryable
    assert agent_errors.ConnectionLostError("x").retryable
    assert not agent_errors.ConnectionLostError("x", retryable=False).retryable
    assert agent_errors.ConnectionLostError.retryable  # the override stayed on the instance


def test_the_drawn_tree_is_the_tree() -> None:
    doc = agent_errors.__doc__ or ""
    drawn: dict[str, str] = {}
    parents: list[str] = []
    for line in doc.split("Tree", 1)[1].splitlines():
        m = re.match(r"^    ((?:│   |    )*)(?:[├└]── )?([A-Z]\w+)\s", line + " ")
        if not m:
            continue
        depth = len(m.group(1)) // 4 + (1 if "──" in line else 0)
        parents[depth:] = [m.group(2)]
        drawn[m.group(2)] = parents[depth - 1] if depth else ""
    actual = {c.__name__: (c.__base__.__name__ if c is not AgentError else "")  # type: ignore[union-attr]
              for c in AGENT}
    assert drawn == actual


def test_the_bottom_layer_imports_nothing_third_party() -> None:
    tree = ast.parse(inspect.getsource(agent_errors))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__"}
