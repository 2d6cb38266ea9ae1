"""The chart's values: values.schema.json refuses bad values, and it, values.yaml and
the comments there describe the same keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.support.chart import CHART, Helm, find


@pytest.mark.parametrize(("setting", "message"), [
    ("operator.replicaCount=two", "operator.replicaCount: Invalid type. Expected: integer"),
    ("agent.migration.port=70000", "agent.migration.port: Must be less than or equal to 65535"),
    ("migrationKey.algorithm=dsa", "migrationKey.algorithm must be one of the following"),
    ("operator.settings.maxAttempts=0", "operator.settings.maxAttempts: Must be greater"),
    ("agent.settings.heartbeatSeconds=0", "agent.settings.heartbeatSeconds: Must be greater"),
    ("operator.bogus=1", "Additional property bogus is not allowed"),
    ("admission.validationActions[0]=Block", "must be one of the following: \"Deny\""),
    ("agent.storageRoot=relative/path", "agent.storageRoot: Does not match pattern"),
    ("operator.image.pullPolicy=Sometimes", "operator.image.pullPolicy must be one of"),
    ("crds.enabled=maybe", "crds.enabled: Invalid type. Expected: boolean"),
    ("admission.validationActions={Deny,Warn}", "admission.validationActions: Must not"),
    ("tenantRBAC.aggregate=yes", "tenantRBAC.aggregate: Invalid type. Expected: boolean"),
])
def test_schema_rejects_bad_values(helm: Helm, setting: str, message: str) -> None:
    proc = helm.run("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_needs_an_existing_secret_when_not_creating_the_key(helm: Helm) -> None:
    proc = helm.run("template", "x", str(CHART), "--set", "migrationKey.create=false",
                    check=False)
    assert proc.returncode != 0
    assert "migrationKey" in proc.stderr
    docs = helm.template("--set", "migrationKey.create=false",
                         "--set", "migrationKey.existingSecret=my-key")
    assert [d for d in docs if d["kind"] == "Secret"] == []
    role = find(docs, "Role", "vmresize-agent")
    assert {"resources": ["secrets"], "resourceNames": ["my-key"], "verbs": ["get"],
            "apiGroups": [""]} in role["rules"]


def _value_paths(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict):
        for key, value in values.items():
            yield f"{prefix}{key}"
            yield from _value_paths(value, f"{prefix}{key}.")


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield f"{prefix}{key}"
        yield from _schema_paths(sub, f"{prefix}{key}.")


def _free_form(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Paths of objects the schema passes through (resources, securityContext, labels...)."""
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" not in sub:
            yield f"{prefix}{key}"
        yield from _free_form(sub, f"{prefix}{key}.")


def test_values_and_schema_describe_the_same_keys() -> None:
    """Every key of values.yaml is in the schema (or inside a pass-through Kubernetes
    object), and the schema describes no key that values.yaml lacks."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_schema = set(_schema_paths(schema))
    in_values = set(_value_paths(yaml.safe_load((CHART / "values.yaml").read_text())))
    free = tuple(f"{p}." for p in _free_form(schema))
    assert in_schema - in_values == set()
    assert {p for p in in_values - in_schema if not p.startswith(free)} == set()


def test_every_values_key_has_a_comment() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    documented = set(_schema_paths(schema))
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    missing = []
    for n, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group(2)])
        stack.append((indent, m.group(2)))
        if path in documented and not lines[n - 1].lstrip().startswith("#"):
            missing.append(path)
    assert missing == []
