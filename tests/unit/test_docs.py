"""docs/reference.md and the lifecycle diagram in docs/concepts.md match the code.

``hack/docsgen.py`` generates both; these fail when either drifted (run ``make crds``), and
check that what is generated says what the models and the lifecycle table say.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from hack import docsgen

from vmresize.api.crdgen import KINDS
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.lifecycle import TABLE

REPO = Path(__file__).resolve().parents[2]


def test_generated_docs_have_not_drifted() -> None:
    assert docsgen.drift(REPO) == []


def test_drift_is_detected(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    for rel in (docsgen.REFERENCE, docsgen.CONCEPTS):
        shutil.copy(REPO / rel, tmp_path / rel)
    assert docsgen.drift(tmp_path) == []
    ref = tmp_path / docsgen.REFERENCE
    ref.write_text(ref.read_text().replace("Virtual CPUs.", "CPUs.", 1))
    concepts = tmp_path / docsgen.CONCEPTS
    concepts.write_text(concepts.read_text().replace("Migrating --> Finishing", "Migrating --> "
                                                     "VerifyResize", 1))
    assert sorted(docsgen.drift(tmp_path)) == sorted([str(docsgen.REFERENCE),
                                                     str(docsgen.CONCEPTS)])


def test_the_agent_doc_names_every_module_and_no_other(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    for rel in (docsgen.REFERENCE, docsgen.CONCEPTS, docsgen.AGENT_DOC):
        shutil.copy(REPO / rel, tmp_path / rel)
    assert docsgen.drift(tmp_path) == []
    doc = tmp_path / docsgen.AGENT_DOC
    text = doc.read_text()
    assert "| `steps/migrate.py` | MigrateDisk (source)" in text
    assert "| `vmfiles/moving.py` |" in text
    doc.write_text(text.replace("| `steps/migrate.py` |", "| `migrate.py` |", 1))
    assert docsgen.drift(tmp_path) == [str(docsgen.AGENT_DOC)]


def test_reference_lists_every_field_with_its_docstring() -> None:
    text = (REPO / docsgen.REFERENCE).read_text()
    for kind in KINDS:
        section = text.split(f"\n## {kind.kind_name}\n", 1)[1].split("\n## ", 1)[0]
        spec_model = kind.model_fields["spec"].annotation
        for name, info in spec_model.model_fields.items():  # type: ignore[union-attr]
            alias = info.alias or name
            row = next((line for line in section.splitlines()
                        if line.startswith(f"| `spec.{alias}` |")), None)
            assert row is not None, f"{kind.kind_name}.spec.{alias} missing"
            if info.description:
                assert " ".join(info.description.split())[:40] in row


def test_diagram_has_every_phase_the_table_knows() -> None:
    text = (REPO / docsgen.CONCEPTS).read_text()
    block = text[text.index(docsgen.BEGIN):text.index(docsgen.END)]
    drawn = set(re.findall(r"^\s+(\w+) --> (\w+)", block, re.MULTILINE))
    phases = {p for pair in drawn for p in pair}
    assert {phase.value for phase, _ in TABLE} <= phases
    assert phases <= {p.value for p in ResizePhase}
    assert ("Migrating", "Finishing") in drawn
    assert ("RollingBack", "RollbackFailed") in drawn
    assert ("Confirmed", "Confirming") not in drawn
