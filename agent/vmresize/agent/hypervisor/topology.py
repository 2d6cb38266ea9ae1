"""vCPU and memory arithmetic of a domain definition, kept consistent on a resize (pure).

A flavor gives a number of vCPUs and MiB; a definition says the same thing in several
places that libvirt cross-checks on define: ``<vcpu>`` (and ``current``), ``<vcpus>``
(per-vCPU hotplug state), ``<cpu><topology>`` (sockets * dies * cores * threads must equal
the vCPU count), ``<cpu><numa><cell cpus memory>`` (cells cover every vCPU once and their
memory adds up to ``<memory>``), ``<cputune>`` (``<vcpupin vcpu>``, and the ``vcpus`` sets
of ``<vcpusched>``, ``<cachetune>``, ``<memorytune>`` name existing vCPUs only),
``<memory>``, ``<currentMemory>`` and ``<maxMemory>`` (at least ``<memory>``).

A flavor's vCPUs are the ones online at boot (``<vcpu current>``, else all), as Nova and
KubeVirt mean them; a domain defined with vCPUs to hot-plug keeps that many on top.

Choices, as Nova's hardware module makes them: the thread and die counts are kept; the core
count too when the new vCPU count allows it, the socket count absorbing the change, else one
socket; and when nothing fits, one core per socket. NUMA cells keep their number; the cells
that had vCPUs share the new ones evenly (fewer vCPUs than such cells is refused), memory-only
cells stay without; memory is shared evenly. Tuning of vCPUs that no longer exist goes; new
vCPUs float within ``<vcpu cpuset>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from vmresize.agent.errors import InvalidDomainConfig

MIB_IN_KIB = 1024


def split(vcpus: int, *, sockets: int, dies: int, cores: int, threads: int
          ) -> tuple[int, int, int, int]:
    """(sockets, dies, cores, threads) for ``vcpus``, changing as little as it can."""
    del sockets  # the socket count is what absorbs a change
    if vcpus % (dies * cores * threads) == 0:
        return vcpus // (dies * cores * threads), dies, cores, threads
    if vcpus % (dies * threads) == 0:
        return 1, dies, vcpus // (dies * threads), threads
    return vcpus, 1, 1, 1


def _int(el: ET.Element, attr: str, default: int = 1) -> int:
    try:
        value = int(el.get(attr, default))
    except ValueError as e:
        raise InvalidDomainConfig(f"<{el.tag} {attr}={el.get(attr)!r}> is not a number") from e
    if value < 1:
        raise InvalidDomainConfig(f"<{el.tag} {attr}={value}> must be positive")
    return value


def cpu_list(first: int, count: int) -> str:
    """libvirt's cpuset text for ``count`` vCPUs from ``first`` (``"2"``, ``"2-3"``)."""
    return str(first) if count == 1 else f"{first}-{first + count - 1}"


def shares(total: int, parts: int, *, quantum: int = 1) -> list[int]:
    """``total`` in ``parts`` as even as multiples of ``quantum`` allow; the first parts
    get what is left over (their sum is exactly ``total``)."""
    base = (total // parts) // quantum * quantum
    out = [base] * parts
    rest = total - base * parts
    i = 0
    while rest >= quantum:
        out[i % parts] += quantum
        rest -= quantum
        i += 1
    out[0] += rest
    return out


def parse_cpuset(text: str) -> set[int]:
    """libvirt's cpuset syntax (``"0-3,^2,6"``) as a set of ids."""
    ids: set[int] = set()
    excluded: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            into = excluded if part.startswith("^") else ids
            lo, _, hi = part.lstrip("^").partition("-")
            into.update(range(int(lo), int(hi or lo) + 1))
    except ValueError as e:
        raise InvalidDomainConfig(f"{text!r} is not a cpuset") from e
    return ids - excluded


def format_cpuset(ids: set[int]) -> str:
    """The shortest cpuset text for ``ids`` (``{0, 1, 2, 5}`` -> ``"0-2,5"``)."""
    out: list[str] = []
    for i in sorted(ids):
        if out and i - 1 in ids:
            continue
        end = i
        while end + 1 in ids:
            end += 1
        out.append(cpu_list(i, end - i + 1))
    return ",".join(out)


def vcpu_counts(dom: ET.Element) -> tuple[int, int]:
    """(online at boot, maximum) from ``<vcpu current=…>N</vcpu>``."""
    el = dom.find("vcpu")
    if el is None:
        return 1, 1
    try:
        top = int((el.text or "1").strip())
    except ValueError as e:
        raise InvalidDomainConfig(f"<vcpu> is not a number: {el.text!r}") from e
    return (_int(el, "current", top) if "current" in el.attrib else top), top


def set_vcpus(dom: ET.Element, vcpus: int) -> None:
    """Give ``dom`` ``vcpus`` online vCPUs everywhere its definition counts them.

    A flavor's vCPUs are the ones online at boot (``current``). A domain defined with
    vCPUs to hot-plug (``current`` below the maximum) keeps that many on top.
    """
    if vcpus < 1:
        raise InvalidDomainConfig(f"{vcpus} vCPUs")
    online, top = vcpu_counts(dom)
    el = dom.find("vcpu")
    if el is None:
        el = ET.SubElement(dom, "vcpu", {"placement": "static"})
    new_top = vcpus + max(0, top - online)
    el.text = str(new_top)
    if "current" in el.attrib:
        el.set("current", str(vcpus))
    per_vcpu = dom.find("vcpus")
    if per_vcpu is not None:  # hotplug state of the old vCPUs; libvirt regenerates it
        dom.remove(per_vcpu)
    topo = dom.find("cpu/topology")
    if topo is not None:
        s, d, c, t = split(new_top, sockets=_int(topo, "sockets"), dies=_int(topo, "dies"),
                           cores=_int(topo, "cores"), threads=_int(topo, "threads"))
        topo.set("sockets", str(s))
        topo.set("cores", str(c))
        topo.set("threads", str(t))
        if "dies" in topo.attrib:
            topo.set("dies", str(d))
    _spread_vcpus(dom.findall("cpu/numa/cell"), new_top)
    tune = dom.find("cputune")
    if tune is not None:
        _prune_vcpu_references(tune, new_top)


def _spread_vcpus(cells: list[ET.Element], vcpus: int) -> None:
    """Cells that had vCPUs share the new ones evenly; memory-only cells stay so."""
    with_cpus = [c for c in cells if (c.get("cpus") or "").strip()]
    if not with_cpus:
        return
    if vcpus < len(with_cpus):
        raise InvalidDomainConfig(f"cannot spread {vcpus} vCPUs over {len(with_cpus)} "
                                  "NUMA cells")
    first = 0
    for cell, count in zip(with_cpus, shares(vcpus, len(with_cpus)), strict=True):
        cell.set("cpus", cpu_list(first, count))
        first += count


def _prune_vcpu_references(tune: ET.Element, vcpus: int) -> None:
    """Tuning of vCPUs that are gone: ``<vcpupin vcpu>`` goes; ``vcpus`` sets
    (``<vcpusched>``, ``<cachetune>``, ``<memorytune>``, …) lose the missing ids, and go
    when none is left. New vCPUs join no set (they float, as an unpinned vCPU does)."""
    for child in list(tune):
        if "vcpu" in child.attrib:
            if not (child.get("vcpu") or "").isdigit() or int(child.get("vcpu", "0")) >= vcpus:
                tune.remove(child)
        elif "vcpus" in child.attrib:
            old = parse_cpuset(child.get("vcpus", ""))
            kept = {i for i in old if i < vcpus}
            if not kept:
                tune.remove(child)
            elif kept != old:
                child.set("vcpus", format_cpuset(kept))


def set_memory(dom: ET.Element, kib: int) -> None:
    """Give ``dom`` ``kib`` KiB of memory: maximum, current, NUMA cells, hotplug ceiling."""
    for tag in ("memory", "currentMemory"):
        el = dom.find(tag)
        if el is None:
            el = ET.SubElement(dom, tag)
        el.text = str(kib)
        el.set("unit", "KiB")
    ceiling = dom.find("maxMemory")
    if ceiling is not None and _kib(ceiling) < kib:
        ceiling.text = str(kib)
        ceiling.set("unit", "KiB")
    cells = dom.findall("cpu/numa/cell")
    for cell, part in zip(cells, shares(kib, len(cells) or 1, quantum=MIB_IN_KIB),
                          strict=False):
        cell.set("memory", str(part))
        cell.set("unit", "KiB")


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
          "m": 1024, "mib": 1024, "mb": 1e6 / 1024, "g": 1024**2, "gib": 1024**2,
          "gb": 1e9 / 1024, "t": 1024**3, "tib": 1024**3}


def _kib(el: ET.Element) -> int:
    """An element's memory amount in KiB, whatever ``unit`` it is written in."""
    unit = el.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise InvalidDomainConfig(f"<{el.tag}> has unknown unit {unit!r}")
    try:
        return int(int((el.text or "0").strip()) * _UNITS[unit])
    except ValueError as e:
        raise InvalidDomainConfig(f"<{el.tag}> is not a number: {el.text!r}") from e


def memory_kib(dom: ET.Element) -> int:
    """``<memory>`` in KiB (0 if absent)."""
    el = dom.find("memory")
    return _kib(el) if el is not None else 0
