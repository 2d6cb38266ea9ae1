"""kubectl for the tests: bounded, against an explicit kubeconfig, never the user's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

#: Every kubectl call is bounded; a loaded 2-core machine answers well within it.
KUBECTL_TIMEOUT = 120


def kubectl(config: Path, *args: str, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run kubectl against ``config``; raises with its stderr when ``check`` and it fails."""
    proc = subprocess.run(["kubectl", f"--kubeconfig={config}", *args], input=stdin,
                          capture_output=True, text=True, timeout=KUBECTL_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


def kubectl_json(config: Path, *args: str) -> dict[str, Any] | None:
    """``kubectl ARGS -o json`` parsed, or None when kubectl fails (e.g. not found)."""
    proc = subprocess.run(["kubectl", f"--kubeconfig={config}", *args, "-o", "json"],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        return None
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc
