"""vCPU and memory arithmetic of a domain definition, kept consistent on a resize (pure).

A flavor gives a number of vCPUs and MiB; a definition says the same thing in several
places that libvirt cross-checks on define: ``<vcpu>`` (and ``current``), ``<vcpus>``
(per-vCPU hotplug state), ``<cpu><topology>`` (sockets * dies * cores * threads must equal
the vCPU count), ``<cpu><numa><cell cpus memory>`` (cells cover every vCPU once and their
memory adds up to ``<memory>``), ``<cputune><vcpupin>`` (pins name existing vCPUs only),
``<memory>``, ``<currentMemory>`` and ``<maxMemory>`` (at least ``<memory>``).

Choices, as Nova's hardware module makes them: the thread and die counts are kept; the core
count too when the new vCPU count allows it, the socket count absorbing the change, else one
socket; and when nothing fits, one core per socket. NUMA cells keep their number and share
vCPUs and memory evenly (fewer vCPUs than cells is refused). Pins of vCPUs that no longer
exist go; new vCPUs float within ``<vcpu cpuset>``.
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


def set_vcpus(dom: ET.Element, vcpus: int) -> None:
    """Give ``dom`` ``vcpus`` vCPUs everywhere its definition counts them."""
    if vcpus < 1:
        raise InvalidDomainConfig(f"{vcpus} vCPUs")
    el = dom.find("vcpu")
    if el is None:
        el = ET.SubElement(dom, "vcpu", {"placement": "static"})
    el.text = str(vcpus)
    el.attrib.pop("current", None)  # a flavor's vCPUs are all online
    per_vcpu = dom.find("vcpus")
    if per_vcpu is not None:  # hotplug state of the old vCPUs; libvirt regenerates it
        dom.remove(per_vcpu)
    topo = dom.find("cpu/topology")
    if topo is not None:
        s, d, c, t = split(vcpus, sockets=_int(topo, "sockets"), dies=_int(topo, "dies"),
                           cores=_int(topo, "cores"), threads=_int(topo, "threads"))
        topo.set("sockets", str(s))
        topo.set("cores", str(c))
        topo.set("threads", str(t))
        if "dies" in topo.attrib:
            topo.set("dies", str(d))
    cells = dom.findall("cpu/numa/cell")
    if cells:
        if vcpus < len(cells):
            raise InvalidDomainConfig(f"cannot spread {vcpus} vCPUs over {len(cells)} "
                                      "NUMA cells")
        first = 0
        for cell, count in zip(cells, shares(vcpus, len(cells)), strict=True):
            cell.set("cpus", cpu_list(first, count))
            first += count
    tune = dom.find("cputune")
    if tune is not None:
        for pin in tune.findall("vcpupin"):
            if not (pin.get("vcpu") or "").isdigit() or int(pin.get("vcpu", "0")) >= vcpus:
                tune.remove(pin)


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
