"""The corpus of domain definitions nobody here wrote for us (``tests/data/domains``).

Each file is a domain the way libvirt's own test data and its domain XML documentation
shape them: disk types, backing chains, media, firmware and NVRAM both ways, TPMs, host
devices, every interface type, CPU models and topologies, NUMA and huge pages, memory
devices, vCPU tuning, channels, filesystems, foreign metadata. ``manifest.toml`` says what
must come of each: refused (with a piece of the reason), or rewritten for a larger and a
smaller flavor with exactly the listed changes.

This module runs one file the way the agent does (``domainxml.unmovable``, then
``vmfiles.files`` and ``path_map`` for the destination's paths, then ``domainxml.rewrite``)
so the unit test and the real-libvirtd test check the same rewrites.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import REPO
from vmresize.agent.hypervisor import domainxml, vmfiles

DIR = REPO / "tests" / "data" / "domains"
ROOT = "/var/lib/vmresize"
"""The storage root the corpus's files live under (``instances/corpus/<name>/``)."""
LARGE = (8, 8192)
SMALL = (1, 1024)
"""Default flavors (vCPUs, MiB); the manifest may name others for a domain."""


@dataclass(frozen=True)
class Flavor:
    """One flavor a domain is rewritten for, and what must come of it."""

    label: str
    vcpus: int
    memory_mib: int
    changes: frozenset[str] = frozenset()
    refused: str | None = None
    """A piece of the :class:`InvalidDomainConfigError` message, when the rewrite must refuse."""


@dataclass(frozen=True)
class Case:
    """One corpus file and its expected outcome."""

    name: str
    refused: str | None = None
    """A piece of :func:`domainxml.unmovable`'s reasons, when the domain cannot move."""
    flavors: tuple[Flavor, ...] = field(default=())

    @property
    def path(self) -> Path:
        return DIR / f"{self.name}.xml"

    @property
    def xml(self) -> str:
        return self.path.read_text()


def _flavor(label: str, spec: dict[str, object], default: tuple[int, int]) -> Flavor:
    size = spec.get("flavor", list(default))
    assert isinstance(size, list)
    changes = spec.get("changes", [])
    assert isinstance(changes, list)
    refused = spec.get("refused")
    return Flavor(label, int(size[0]), int(size[1]), frozenset(str(c) for c in changes),
                  str(refused) if refused is not None else None)


def cases() -> list[Case]:
    """Every corpus file with its manifest entry (a file without one is an error)."""
    manifest = tomllib.loads((DIR / "manifest.toml").read_text())
    refused: dict[str, str] = manifest["refused"]
    rewritten: dict[str, dict[str, dict[str, object]]] = manifest["rewritten"]
    out = []
    for path in sorted(DIR.glob("*.xml")):
        name = path.stem
        if name in refused:
            out.append(Case(name, refused=refused[name]))
        else:
            entry = rewritten[name]
            out.append(Case(name, flavors=(
                _flavor("large", entry.get("large", {}), LARGE),
                _flavor("small", entry.get("small", {}), SMALL))))
    assert {c.name for c in out} == set(refused) | set(rewritten), "manifest names a file " \
        "that does not exist"
    return out


def destination_paths(xml: str, name: str) -> dict[str, str]:
    """Where each file of the domain lands: its instance directory's files in a new one
    (``<name>-dest``), shared images where they are; serial logs in the instance directory
    follow it (as ``moving.definition`` does)."""
    old_dir = f"instances/corpus/{name}/"
    moved = [f.model_copy(update={"path": f.path.replace(old_dir, f"instances/corpus/"
                                                                   f"{name}-dest/")})
             for f in vmfiles.files(xml, ROOT)]
    mapping = vmfiles.path_map(moved, ROOT)
    for log in domainxml.host_files(xml):
        if log.startswith(f"{ROOT}/{old_dir}"):
            mapping.setdefault(log, posixpath.join(f"{ROOT}/instances/corpus/{name}-dest",
                                                   posixpath.basename(log)))
    return mapping


def rewrite(case: Case, flavor: Flavor) -> str:
    """The destination's definition of ``case`` for ``flavor``, as Finish makes it."""
    xml = case.xml
    return domainxml.rewrite(xml, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib,
                             disk_paths=destination_paths(xml, case.name))


_INDEX = re.compile(r"\[\d+\]")


def changes(before: str, after: str) -> set[str]:
    """``domainxml.diff`` with positions left out: the paths (``cputune/vcpupin@vcpu``,
    keyed devices such as ``devices/disk[vda]`` kept) whose values differ as a multiset,
    so dropping one of four pins names the pins, not every pin whose position moved."""
    def values(xml: str) -> Counter[tuple[str, str]]:
        return Counter((_INDEX.sub("", k), v) for k, v in domainxml.flatten(xml).items())
    a, b = values(before), values(after)
    return {path for path, _ in (a - b) + (b - a)}
