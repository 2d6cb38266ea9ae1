"""VMResizes and Instances, in every phase, as the real kstatus library reads them.

Flux and Argo CD judge custom resources with ``sigs.k8s.io/cli-utils/pkg/kstatus``;
``hack/kstatus`` is a small command around that library (built once from the Go module
proxy by ``hack/build-kstatus.sh``). Each phase's status is made by the operator's own
condition functions and must read: in progress while the operator (or the user, in
VerifyResize) still has to act, current once done (Cancelled too: what the user asked for),
failed when the request will not be
carried out (Failed, RollbackFailed, RolledBack, an Instance in Error).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vmresize.api.instance import InstancePhase
from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions import conditions

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, tzinfo=UTC)
P = ResizePhase
EXPECTED_RESIZE = {
    **{p: "InProgress" for p in P},
    P.CONFIRMED: "Current", P.REVERTED: "Current", P.CANCELLED: "Current",
    P.FAILED: "Failed", P.ROLLBACK_FAILED: "Failed", P.ROLLED_BACK: "Failed",
}
EXPECTED_INSTANCE = {**{p: "InProgress" for p in InstancePhase},
                     InstancePhase.ACTIVE: "Current", InstancePhase.ERROR: "Failed"}


@pytest.fixture(scope="module")
def kstatus() -> Path:
    out = subprocess.run(["bash", str(REPO / "hack" / "build-kstatus.sh")], check=True,
                         capture_output=True, text=True, timeout=1500)
    return Path(out.stdout.strip())


def judge(binary: Path, objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    lines = "".join(json.dumps(o) + "\n" for o in objects)
    out = subprocess.run([str(binary)], input=lines, capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert len(out) == len(objects), out
    return [tuple(line.split("\t", 1)) for line in out]  # type: ignore[misc]


def resize(phase: ResizePhase, *, generation: int = 3, observed: int = 3,
           settling: bool = False) -> dict[str, Any]:
    conds = conditions.resize_conditions([], phase, f"{phase.value}Reason", "what happened",
                                         NOW, observed, settling=settling)
    return {"apiVersion": "vmresize.io/v1alpha1", "kind": "VMResize",
            "metadata": {"name": "r", "namespace": "ns", "generation": generation},
            "status": {"phase": phase.value, "observedGeneration": observed,
                       "conditions": [c.wire() for c in conds]}}


def instance(phase: InstancePhase) -> dict[str, Any]:
    conds = conditions.instance_conditions([], phase, "what happened", NOW)
    return {"apiVersion": "vmresize.io/v1alpha1", "kind": "Instance",
            "metadata": {"name": "vm", "namespace": "ns", "generation": 1},
            "status": {"phase": phase.value, "conditions": [c.wire() for c in conds]}}


def test_every_resize_phase_reads_as_gitops_tools_should(kstatus: Path) -> None:
    phases = list(P)
    got = judge(kstatus, [resize(p) for p in phases])
    assert {p: s for p, (s, _) in zip(phases, got, strict=True)} == EXPECTED_RESIZE
    failed = dict(zip(phases, got, strict=True))
    assert failed[P.FAILED][1] == "what happened"  # the Stalled condition's message


def test_a_finished_resize_still_settling_or_not_yet_observed_is_in_progress(
        kstatus: Path) -> None:
    got = judge(kstatus, [resize(P.CONFIRMED, settling=True),
                          resize(P.CONFIRMED, generation=4, observed=3)])
    assert [s for s, _ in got] == ["InProgress", "InProgress"]


def test_every_instance_phase_reads_as_gitops_tools_should(kstatus: Path) -> None:
    phases = list(InstancePhase)
    got = judge(kstatus, [instance(p) for p in phases])
    assert {p: s for p, (s, _) in zip(phases, got, strict=True)} == EXPECTED_INSTANCE
