"""The checked-in CRDs are exactly what the pydantic models generate, and are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vmresize.api import crdgen

REPO = Path(__file__).resolve().parents[3]


def test_checked_in_crds_match_the_models() -> None:
    stale = crdgen.drift(REPO)
    assert stale == [], f"regenerate with `python -m vmresize.api.crdgen`: {stale}"


def test_drift_is_detected(tmp_path: Path) -> None:
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    target = tmp_path / "crds" / "vmresizes.vmresize.io.yaml"
    target.write_text(target.read_text().replace("maxLength: 63", "maxLength: 64"))
    assert crdgen.drift(tmp_path) == ["crds/vmresizes.vmresize.io.yaml"]
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out.extend(_walk(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_walk(value, f"{path}[{i}]"))
    return out


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind_name)
def test_schema_is_structural(kind: type) -> None:
    schema = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node, path
        assert "title" not in node, path
        if "properties" in node:
            assert node.get("type") == "object", path
        if node.get("exclusiveMinimum") is not None:
            assert isinstance(node["exclusiveMinimum"], bool), path


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind_name)
def test_every_field_is_documented(kind: type) -> None:
    schema = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        top = schema["properties"].get(section)
        if top is None:
            continue
        for path, node in _walk(top):
            for name, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"{section}{path}/{name} has no description"


def test_resize_has_documented_printer_columns() -> None:
    columns = [c["name"] for c in crdgen.crd(crdgen.KINDS[3])["spec"]["versions"][0][
        "additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Phase", "Instance", "From", "To", "Flavor", "Progress", "Age"]


def test_chart_copy_has_the_same_spec() -> None:
    for kind in crdgen.KINDS:
        name = f"{kind.plural}.vmresize.io.yaml"
        plain = yaml.safe_load((REPO / "crds" / name).read_text())
        templated = (REPO / crdgen.CHART_CRD_DIR / name).read_text()
        assert templated.startswith("{{- if .Values.crds.enabled }}")
        spec_text = templated.split("\nspec:\n", 1)[1].rsplit("{{- end }}", 1)[0]
        assert yaml.safe_load("spec:\n" + spec_text)["spec"] == plain["spec"]
