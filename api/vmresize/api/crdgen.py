"""Generates the CRD YAML in ``crds/`` and the Helm chart from the pydantic models.

Kubernetes wants *structural* OpenAPI v3 schemas: no ``$ref``, ``nullable`` instead of
``anyOf [X, null]``, boolean ``exclusiveMinimum``. This module rewrites pydantic's JSON
Schema into that form. ``vmresize-crdgen`` writes the files; ``--check`` fails on drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vmresize.api import genfiles
from vmresize.api.drain import HostDrain
from vmresize.api.flavor import Flavor
from vmresize.api.host import Host
from vmresize.api.hosttask import HostTask
from vmresize.api.instance import Instance
from vmresize.api.meta import GROUP, VERSION, Resource
from vmresize.api.quota import VMQuota
from vmresize.api.resize import VMResize

KINDS: tuple[type[Resource], ...] = (Flavor, Host, Instance, VMResize, HostTask, VMQuota,
                                     HostDrain)
CATEGORY = "vmresize-all"
CHART_CRD_DIR = Path("deploy/helm/vmresize/templates/crds")
CRD_DIR = Path("crds")

_DROP = {"title", "additionalProperties", "$defs"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON Schema node into a Kubernetes structural schema node."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    any_of = schema.get("anyOf")
    if any_of is not None:
        rest = [s for s in any_of if s.get("type") != "null"]
        if len(rest) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {any_of!r}")
        outer = {k: v for k, v in schema.items() if k != "anyOf"}
        inner = structural(rest[0], defs)
        node = {**inner, **structural(outer, defs)}
        if len(rest) < len(any_of):
            node["nullable"] = True
        if node.get("default", 0) is None:
            del node["default"]
        return node

    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = structural(extra, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("default", 0) is None:
        del out["default"]
    return out


def model_schema(model: type[Any], validations: list[dict[str, Any]]) -> dict[str, Any]:
    """The structural schema of a spec or status model, with its CEL ``validations`` attached."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    node = structural(raw, raw.get("$defs", {}))
    if validations:
        node["x-kubernetes-validations"] = list(validations)
    return node


def crd(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    fields = kind.model_fields
    spec_model: Any = fields["spec"].annotation
    status_field = fields.get("status")
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": model_schema(spec_model, kind.spec_validations),
    }
    if status_field is not None:
        annotation: Any = status_field.annotation
        status_model = next(a for a in annotation.__args__ if a is not type(None))
        properties["status"] = model_schema(status_model, [])
    openapi: dict[str, Any] = {
        "type": "object",
        "description": (kind.__doc__ or "").strip(),
        "properties": properties,
    }
    if fields["spec"].is_required():
        openapi["required"] = ["spec"]
    if kind.root_validations:
        openapi["x-kubernetes-validations"] = list(kind.root_validations)
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            c.model_dump(by_alias=True, exclude_defaults=True) | {"type": c.type}
            for c in kind.printer_columns
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind_name,
                "listKind": f"{kind.kind_name}List",
                "plural": kind.plural,
                "singular": kind.kind_name.lower(),
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=100)


def chart_template(doc: dict[str, Any]) -> str:
    """The chart's copy: behind ``crds.enabled``, kept on uninstall with ``crds.keep``."""
    body = _dump({k: v for k, v in doc.items() if k != "metadata"})
    api_kind, spec = body.split("spec:\n", 1)
    return (
        "{{- if .Values.crds.enabled }}\n"
        "# Generated by vmresize-crdgen from the pydantic models. Do not edit.\n"
        f"{api_kind}"
        "metadata:\n"
        f"  name: {doc['metadata']['name']}\n"
        "  labels:\n"
        '    {{- include "vmresize.labels" . | nindent 4 }}\n'
        "  {{- if .Values.crds.keep }}\n"
        "  annotations:\n"
        "    helm.sh/resource-policy: keep\n"
        "  {{- end }}\n"
        f"spec:\n{spec}"
        "{{- end }}\n"
    )


def rendered() -> dict[Path, str]:
    """Every generated file, by path relative to the repository root."""
    files: dict[Path, str] = {}
    for kind in KINDS:
        doc = crd(kind)
        name = f"{kind.plural}.{GROUP}.yaml"
        files[CRD_DIR / name] = "# Generated by vmresize-crdgen from the pydantic models. " \
            "Do not edit.\n" + _dump(doc)
        files[CHART_CRD_DIR / name] = chart_template(doc)
    return files


def drift(root: Path) -> list[str]:
    """Paths under ``root`` whose content differs from what the models generate."""
    return genfiles.drift(_render, root)


def _render(_root: Path) -> dict[Path, str]:
    return rendered()


def main(argv: list[str] | None = None) -> int:
    """Write the CRDs into ``crds/`` and the chart, or with ``--check`` list the drifted files and
    return 1."""
    return genfiles.main(_render, description=(__doc__ or "").splitlines()[0],
                         source="the models", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
