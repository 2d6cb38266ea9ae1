"""vCPU and memory arithmetic of a domain definition, kept consistent on a resize (pure).

A flavor gives a number of vCPUs and MiB; a definition says the same thing in several
places that libvirt cross-checks on define: ``<vcpu>`` (and ``current``), ``<vcpus>``
(per-vCPU hotplug state), ``<cpu><topology>`` (sockets * dies * cores * threads must equal
the vCPU count), ``<cpu><numa><cell cpus memory>`` (cells name existing vCPUs only, and
their memory is the initial RAM), ``<cputune>`` (``<vcpupin vcpu>``, and the ``vcpus``
sets of ``<vcpusched>``, ``<cachetune>``, ``<memorytune>`` name existing vCPUs only),
``<memory>`` (libvirt's total: initial RAM plus every memory device), ``<currentMemory>``
(the balloon target) and ``<maxMemory>`` (the hotplug ceiling, at least ``<memory>``).

What a flavor means, as Nova and KubeVirt mean it: its vCPUs and its memory are what the
guest has *at boot*; what a domain keeps for hot-plug comes on top and is kept as it was.

* vCPUs: the ones online at boot (``<vcpu current>``, else all). A domain defined with
  vCPUs to hot-plug (``current`` below the maximum) keeps that many above the new count.
* Memory: the RAM the guest has at boot: initial RAM plus DIMMs plus the part of each
  virtio-mem device that is plugged (``requested``). Memory devices are never resized:
  the initial RAM (``<memory>`` less the devices, or the NUMA cells' sum) takes the change,
  and a flavor that does not cover the devices' RAM is refused. The rest of a virtio-mem
  device (``size`` above ``requested``) is hot-plug room; NVDIMM and virtio-pmem are
  persistent memory beside the flavor (Nova's vPMEM). ``<memory>`` becomes initial RAM +
  every device's size, which equals the flavor for a domain without devices.
* ``<maxMemory>`` is kept while it is at least the new ``<memory>``, else raised keeping
  the room for hot-plug it left (old maximum less old ``<memory>``).
* ``<currentMemory>`` (the balloon target) follows ``<memory>``, or keeps its fraction of
  it when the balloon was inflated (rounded down to a MiB).

Choices, as Nova's hardware module makes them: the thread and die counts are kept; the core
count too when the new vCPU count allows it, the socket count absorbing the change, else one
socket; and when nothing fits, one core per socket. NUMA cells keep their number: the cells
that had vCPUs share the new ones evenly (fewer vCPUs than such cells is refused), memory-only
cells stay without; the initial RAM is shared in the proportion of the old cell sizes, each
cell a whole number of its huge pages (``<memoryBacking><hugepages><page nodeset>``; QEMU
refuses a cell that is not), and a size that cannot be cut so is refused. Tuning of vCPUs
that no longer exist goes; new vCPUs float within ``<vcpu cpuset>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vmresize.agent.errors import InvalidDomainConfigError

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
        raise InvalidDomainConfigError(f"<{el.tag} {attr}={el.get(attr)!r}> is not a number") from e
    if value < 1:
        raise InvalidDomainConfigError(f"<{el.tag} {attr}={value}> must be positive")
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
        raise InvalidDomainConfigError(f"{text!r} is not a cpuset") from e
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
        raise InvalidDomainConfigError(f"<vcpu> is not a number: {el.text!r}") from e
    return (_int(el, "current", top) if "current" in el.attrib else top), top


def set_vcpus(dom: ET.Element, vcpus: int) -> None:
    """Give ``dom`` ``vcpus`` online vCPUs everywhere its definition counts them.

    A flavor's vCPUs are the ones online at boot (``current``). A domain defined with
    vCPUs to hot-plug (``current`` below the maximum) keeps that many on top.
    """
    if vcpus < 1:
        raise InvalidDomainConfigError(f"{vcpus} vCPUs")
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
        raise InvalidDomainConfigError(f"cannot spread {vcpus} vCPUs over {len(with_cpus)} "
                                  "NUMA cells")
    first = 0
    for cell, count in zip(with_cpus, shares(vcpus, len(with_cpus)), strict=True):
        cell.set("cpus", cpu_list(first, count))
        first += count


def _prune_vcpu_references(parent: ET.Element, vcpus: int) -> None:
    """Tuning of vCPUs that are gone: ``<vcpupin vcpu>`` goes; ``vcpus`` sets
    (``<vcpusched>``, ``<cachetune>`` and its ``<monitor>``s, ``<memorytune>``, …) lose the
    missing ids, and go when none is left. New vCPUs join no set (they float, as an
    unpinned vCPU does)."""
    for child in list(parent):
        if "vcpu" in child.attrib:
            if not (child.get("vcpu") or "").isdigit() or int(child.get("vcpu", "0")) >= vcpus:
                parent.remove(child)
                continue
        elif "vcpus" in child.attrib:
            old = parse_cpuset(child.get("vcpus", ""))
            kept = {i for i in old if i < vcpus}
            if not kept:
                parent.remove(child)
                continue
            if kept != old:
                child.set("vcpus", format_cpuset(kept))
        _prune_vcpu_references(child, vcpus)


def set_memory(dom: ET.Element, kib: int) -> None:
    """Give ``dom`` ``kib`` KiB of RAM at boot (see the module docstring for what counts).

    ``<memory>`` is libvirt's total: the initial RAM (the NUMA cells' sum when there are
    cells) plus every memory device's size. Devices are kept as they are; the initial RAM
    takes the change. Raises :class:`InvalidDomainConfigError` when the flavor does not cover the
    RAM devices, or cannot be cut into the huge pages that back the memory.
    """
    devices = memory_devices(dom)
    initial = kib - devices.ram_kib
    if initial < MIB_IN_KIB:
        raise InvalidDomainConfigError(
            f"{kib // MIB_IN_KIB} MiB of memory does not cover the domain's RAM devices "
            f"({devices.ram_kib // MIB_IN_KIB} MiB of DIMM and plugged virtio-mem): a flavor's "
            "memory is the guest's RAM at boot, devices included")
    old_total = memory_kib(dom)
    total = initial + devices.size_kib
    pages = huge_pages(dom)
    cells = dom.findall("cpu/numa/cell")
    if cells:
        olds = [_kib(c, attr="memory") for c in cells]
        quanta = [max(MIB_IN_KIB, pages.get(i, pages.get(None, 0)))
                  for i in (_cell_id(c, n) for n, c in enumerate(cells))]
        for cell, part in zip(cells, proportional(initial, olds, quanta), strict=True):
            cell.set("memory", str(part))
            cell.set("unit", "KiB")
    elif pages and initial % max(pages.values()):
        raise InvalidDomainConfigError(
            f"{initial // MIB_IN_KIB} MiB of initial memory is not a whole number of the "
            f"{max(pages.values()) // MIB_IN_KIB} MiB huge pages that back it")
    el = dom.find("memory")
    if el is None:
        el = ET.SubElement(dom, "memory")
    _set_kib(el, total)
    current = dom.find("currentMemory")
    if current is None:
        current = ET.SubElement(dom, "currentMemory")
        target = total
    else:  # a balloon target below the maximum keeps its share of it
        old_current = _kib(current)
        target = total if old_total <= 0 or old_current >= old_total else \
            max(MIB_IN_KIB, old_current * total // old_total // MIB_IN_KIB * MIB_IN_KIB)
    _set_kib(current, target)
    ceiling = dom.find("maxMemory")
    if ceiling is not None and _kib(ceiling) < total:  # keep the room left for hotplug
        _set_kib(ceiling, total + max(0, _kib(ceiling) - old_total))


def _set_kib(el: ET.Element, kib: int) -> None:
    el.text = str(kib)
    el.set("unit", "KiB")


def _cell_id(cell: ET.Element, index: int) -> int:
    try:
        return int(cell.get("id", index))
    except ValueError as e:
        raise InvalidDomainConfigError(f"NUMA cell id {cell.get('id')!r} is not a number") from e


def proportional(total: int, weights: list[int], quanta: list[int]) -> list[int]:
    """``total`` cut into parts in the proportion of ``weights``, part ``i`` a positive
    multiple of ``quanta[i]``; their sum is exactly ``total`` or this raises."""
    weight = sum(weights) or len(weights)
    parts = [max(q, (total * (w or 1) // weight) // q * q)
             for w, q in zip(weights, quanta, strict=True)]
    rest = total - sum(parts)
    # hand out (or take back) whole quanta, largest part first, until nothing is left
    order = sorted(range(len(parts)), key=lambda i: (-parts[i], i))
    for i in order * (abs(rest) // min(quanta) + 1):
        if rest == 0:
            break
        q = quanta[i]
        if rest >= q:
            parts[i] += q
            rest -= q
        elif rest < 0 and parts[i] - q >= q:
            parts[i] -= q
            rest += q
    if rest != 0:
        sizes = sorted({q // MIB_IN_KIB for q in quanta})
        raise InvalidDomainConfigError(
            f"{total // MIB_IN_KIB} MiB cannot be cut into {len(parts)} NUMA cells of whole "
            f"pages ({', '.join(str(m) for m in sizes)} MiB): pick a memory size that is a "
            "multiple of the page size")
    return parts


@dataclass(frozen=True)
class MemoryDevices:
    """The domain's ``<devices><memory>`` in KiB."""

    size_kib: int
    """Every device's ``<target><size>``: what libvirt adds to the initial RAM in
    ``<memory>``."""
    ram_kib: int
    """RAM the guest has at boot from devices: DIMMs' size, virtio-mem's ``requested``.
    NVDIMM and virtio-pmem are persistent memory, beside the flavor's (as Nova's vPMEM)."""


def memory_devices(dom: ET.Element) -> MemoryDevices:
    """Sizes of the domain's memory devices (see :class:`MemoryDevices`)."""
    size = ram = 0
    for dev in dom.iterfind("devices/memory"):
        el = dev.find("target/size")
        kib = _kib(el) if el is not None else 0
        size += kib
        model = dev.get("model", "dimm")
        if model == "dimm":
            ram += kib
        elif model == "virtio-mem":
            req = dev.find("target/requested")
            ram += _kib(req) if req is not None else 0
    return MemoryDevices(size_kib=size, ram_kib=ram)


DEFAULT_HUGE_PAGE_KIB = 2 * MIB_IN_KIB
"""``<hugepages/>`` without a ``<page>``: the host's default size, 2 MiB on x86-64 (the
kernel's ``Hugepagesize``); a host booted with another default must name its pages."""


def huge_pages(dom: ET.Element) -> dict[int | None, int]:
    """Huge page size in KiB by NUMA cell id (``None``: every cell without its own)."""
    backing = dom.find("memoryBacking/hugepages")
    if backing is None:
        return {}
    out: dict[int | None, int] = {}
    pages = backing.findall("page")
    if not pages:
        return {None: DEFAULT_HUGE_PAGE_KIB}
    for page in pages:
        kib = _kib(page, attr="size")
        nodeset = page.get("nodeset")
        for cell in sorted(parse_cpuset(nodeset)) if nodeset else [None]:
            out[cell] = max(kib, out.get(cell, 0))
    return out


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
          "m": 1024, "mib": 1024, "mb": 1e6 / 1024, "g": 1024**2, "gib": 1024**2,
          "gb": 1e9 / 1024, "t": 1024**3, "tib": 1024**3}


def _kib(el: ET.Element, *, attr: str | None = None) -> int:
    """An element's memory amount (its text, or ``attr`` with ``unit``) in KiB."""
    unit = el.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise InvalidDomainConfigError(f"<{el.tag}> has unknown unit {unit!r}")
    text = el.get(attr, "0") if attr else el.text
    try:
        return int(int((text or "0").strip()) * _UNITS[unit])
    except ValueError as e:
        raise InvalidDomainConfigError(f"<{el.tag}> is not a number: {el.text!r}") from e


def memory_kib(dom: ET.Element) -> int:
    """``<memory>`` in KiB (0 if absent)."""
    el = dom.find("memory")
    return _kib(el) if el is not None else 0
