"""Every definition of the corpus (``tests/data/domains``, see ``tests.support.domain_corpus``)
is refused with its reason, or rewritten for a larger and a smaller flavor with exactly the
changes its manifest lists, and the rewrite holds together the way libvirt checks it.

The manifest's change lists say *which* fields change; :func:`check_sizes` says, from the
rewritten XML alone and without the code under test, that the numbers add up: the online
vCPUs are the flavor's, the topology and NUMA cells cover every vCPU once, no tuning names a
vCPU that is gone, the RAM at boot is the flavor's, ``<memory>`` is the cells plus every
memory device, cells are whole huge pages, no path of the old instance directory is left.
Each source and each rewrite is defined with schema validation on libvirt's
``test:///default`` driver (the QEMU driver's check is ``tests/e2e/test_real_libvirtd_corpus.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support import domain_corpus as dc

from vmresize.agent.errors import InvalidDomainConfigError
from vmresize.agent.hypervisor import domainxml as dx
from vmresize.agent.hypervisor import topology

CASES = dc.cases()
REFUSED = [c for c in CASES if c.refused]
REWRITTEN = [(c, f) for c in CASES if not c.refused for f in c.flavors]
KIB = {"k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1024**2, "gib": 1024**2}


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len(REFUSED) >= 20
    assert len(CASES) - len(REFUSED) >= 40


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_a_domain_that_cannot_move_is_refused_with_its_reason(case: dc.Case) -> None:
    reasons = "; ".join(dx.unmovable(case.xml, dc.ROOT))
    expected = (case.refused or "").replace("@DIR@", f"{dc.ROOT}/instances/corpus/{case.name}")
    assert expected in reasons


def _ids(cpuset: str) -> set[int]:
    """libvirt's cpuset syntax, read here and not by the code under test."""
    ids: set[int] = set()
    for part in filter(None, cpuset.split(",")):
        lo, _, hi = part.lstrip("^").partition("-")
        span = set(range(int(lo), int(hi or lo) + 1))
        ids = ids - span if part.startswith("^") else ids | span
    return ids


def _kib(el: Any, attr: str | None = None) -> int:
    unit = (el.get("unit") or "KiB").lower()
    return int((el.get(attr) if attr else el.text).strip()) * KIB[unit]


def check_sizes(name: str, before: str, after: str, vcpus: int, memory_mib: int) -> None:
    """The numbers of ``after`` add up (see the module docstring)."""
    old, dom = dx.parse(before), dx.parse(after)
    old_vcpu, vcpu = old.find("vcpu"), dom.find("vcpu")
    assert vcpu is not None
    assert old_vcpu is not None
    top, online = int(vcpu.text or ""), int(vcpu.get("current", vcpu.text or ""))
    old_top = int(old_vcpu.text or "")
    assert online == vcpus
    assert top - online == old_top - int(old_vcpu.get("current", old_top))
    topo = dom.find("cpu/topology")
    if topo is not None:
        product = 1
        for attr in ("sockets", "dies", "cores", "threads"):
            product *= int(topo.get(attr, "1"))
        assert product == top
    cells = dom.findall("cpu/numa/cell")
    old_cells = old.findall("cpu/numa/cell")
    with_cpus = [_ids(c.get("cpus", "")) for c in cells if c.get("cpus")]
    if with_cpus:
        assert sorted(i for s in with_cpus for i in s) == list(range(top))
        assert [bool(c.get("cpus")) for c in cells] == [bool(c.get("cpus")) for c in old_cells]
    for el in (e for tune in dom.iterfind("cputune") for e in tune.iter() if e is not tune):
        if el.get("vcpu") is None and el.get("vcpus") is None:
            continue
        ids = ({int(el.get("vcpu", "0"))} if el.get("vcpu") is not None
               else _ids(el.get("vcpus", "")))
        assert all(i < top for i in ids), (el.tag, el.attrib)
    devices = dom.findall("devices/memory")
    sizes = sum(_kib(d.find("target/size")) for d in devices)
    ram = sum(_kib(d.find("target/size")) for d in devices if d.get("model") == "dimm") + sum(
        _kib(d.find("target/requested")) for d in devices if d.get("model") == "virtio-mem")
    memory = dom.find("memory")
    assert memory is not None
    total = _kib(memory)
    initial = sum(_kib(c, "memory") for c in cells) if cells else total - sizes
    assert initial + sizes == total
    assert initial + ram == memory_mib * 1024
    current, ceiling = dom.find("currentMemory"), dom.find("maxMemory")
    assert current is not None
    assert _kib(current) <= total
    assert ceiling is None or _kib(ceiling) >= total
    pages = {p.get("nodeset"): _kib(p, "size") for p in dom.iterfind(
        "memoryBacking/hugepages/page")}
    for cell in cells:
        page = next((kib for ns, kib in pages.items()
                     if ns and int(cell.get("id", "-1")) in _ids(ns)),
                    pages.get(None, 1024))
        assert _kib(cell, "memory") % page == 0
    assert f"/instances/corpus/{name}/" not in after


@pytest.mark.parametrize(("case", "flavor"), REWRITTEN,
                         ids=[f"{c.name}-{f.label}" for c, f in REWRITTEN])
def test_a_movable_domain_is_rewritten_with_exactly_the_expected_changes(
        case: dc.Case, flavor: dc.Flavor) -> None:
    xml = case.xml
    assert dx.unmovable(xml, dc.ROOT) == []
    if flavor.refused:
        with pytest.raises(InvalidDomainConfigError, match=re.escape(flavor.refused)):
            dc.rewrite(case, flavor)
        return
    after = dc.rewrite(case, flavor)
    assert dc.changes(xml, after) == flavor.changes
    check_sizes(case.name, xml, after, flavor.vcpus, flavor.memory_mib)


@pytest.fixture(scope="module")
def test_driver() -> Iterator[Any]:
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open("test:///default")
    yield libvirt, conn
    conn.close()


@pytest.mark.parametrize("case", [c for c in CASES if not c.refused], ids=lambda c: c.name)
def test_libvirt_validates_the_source_and_every_rewrite(test_driver: Any,
                                                       case: dc.Case) -> None:
    libvirt, conn = test_driver
    for xml in [case.xml] + [dc.rewrite(case, f) for f in case.flavors if not f.refused]:
        dom = conn.defineXMLFlags(xml.replace("<domain type='kvm'", "<domain type='test'"),
                                  libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        back = dx.flatten(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        dom.undefine()
        ours = dx.flatten(xml)
        assert back["vcpu"] == ours["vcpu"]
        assert int(back["memory"]) == topology.memory_kib(dx.parse(xml))


@pytest.mark.parametrize(("case", "flavor"), REWRITTEN,
                         ids=[f"{c.name}-{f.label}" for c, f in REWRITTEN])
def test_a_size_the_rewrite_refuses_is_known_before_the_power_off(
        case: dc.Case, flavor: dc.Flavor) -> None:
    got = dx.size_refusal(case.xml, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib)
    if flavor.refused:
        assert got is not None
        assert flavor.refused in got
    else:
        assert got is None


@pytest.mark.parametrize(("case", "flavor"), REWRITTEN,
                         ids=[f"{c.name}-{f.label}" for c, f in REWRITTEN])
def test_the_source_asks_the_rewrite_itself_and_gets_the_same_answer(
        case: dc.Case, flavor: dc.Flavor) -> None:
    got = dx.rewrite_refusal(case.xml, vcpus=flavor.vcpus, memory_mib=flavor.memory_mib)
    if flavor.refused:
        assert got is not None
        assert flavor.refused in got
    else:
        assert got is None
