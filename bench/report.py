"""Where benchmark results go: ``bench/results/<name>.json`` and ``<name>.md``, each stamped
with the machine (CPU model, cores, memory, kernel, Python, load, date, commit).

    machine() -> dict[str, object]
    write(name: str, doc: dict[str, object], markdown: str) -> tuple[Path, Path]
    loadavg() -> str; proc_cpu(pid, children=False) -> float; self_cpu(who) -> float
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=RESULTS.parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``, or of its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11  # cutime, cstime / utime, stime (after the comm field)
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def self_cpu(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def machine() -> dict[str, object]:
    """The stamp every result carries (the fleet benchmarks' writer uses it too)."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _mem_gib(),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg": loadavg(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit()}


def write(name: str, doc: dict[str, object], markdown: str) -> tuple[Path, Path]:
    """Write ``doc`` (plus ``machine``) as JSON and ``markdown`` (plus a machine line)."""
    RESULTS.mkdir(exist_ok=True)
    m = doc.setdefault("machine", machine())
    assert isinstance(m, dict)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    js.write_text(json.dumps(doc, indent=2) + "\n")
    stamp = (f"_{m['date']}, {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}, "
             f"Python {m['python']}, commit {m['commit']}_\n")
    md.write_text(markdown.rstrip() + "\n\n" + stamp)
    return js, md
