"""Where the fleet benchmarks write: ``bench/results/<name>.json`` and ``<name>.md``, each
stamped with the machine (CPU model, cores, memory, kernel, Python, load, date, commit).

Kept apart from the transfer benchmark's writer (another branch adds ``bench/report.py``);
the stamp has the same fields so the two can merge.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=RESULTS.parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, object]:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _mem_gib(),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit()}


def write(name: str, doc: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``doc`` (with the machine stamp) and ``markdown`` (under a stamp header)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = machine()
    j, m = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    j.write_text(json.dumps({"machine": stamp, **doc}, indent=2) + "\n")
    head = (f"Machine: {stamp['cpu']}, {stamp['cores']} cores, {stamp['memory_gib']} GiB, "
            f"kernel {stamp['kernel']}, Python {stamp['python']}; load {stamp['loadavg']}; "
            f"{stamp['date']}; commit {stamp['commit']}\n\n")
    m.write_text(head + markdown)
    print(f"wrote {j} and {m}")
    return j, m


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"
