"""Where the fleet benchmarks write: ``bench/results/<name>.json`` and ``<name>.md``, each
stamped with the machine (CPU model, cores, memory, kernel, Python, load, date, commit).

The stamp is :func:`bench.report.machine`, as for the transfer benchmark; the layout of
the Markdown header is this writer's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import RESULTS, machine


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
