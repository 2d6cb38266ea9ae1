"""The QEMU driver of a real libvirtd (``hack/libvirtd.py``) takes every movable domain of
the corpus (``tests/data/domains``) and every rewrite of it, with schema validation.

``defineXML`` with ``VIR_DOMAIN_DEFINE_VALIDATE`` runs libvirt's RNG schema plus the QEMU
driver's own checks against this host's QEMU (machine types, devices, vCPU ids in tuning,
memory devices against ``<memory>``, huge pages per cell): what Finish's define would
refuse on a destination. libvirt's reading of each rewrite must keep its vCPUs and memory.
Nothing is started, so no disk needs to exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from hack.libvirtd import LibvirtdUnavailableError, PrivateLibvirtd
from tests.support import domain_corpus as dc

from vmresize.agent.hypervisor import domainxml as dx
from vmresize.agent.hypervisor import topology

MOVABLE = [c for c in dc.cases() if not c.refused]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = PrivateLibvirtd(tmp_path_factory.mktemp("corpus") / "libvirtd")
    try:
        d.start()
    except LibvirtdUnavailableError as e:
        pytest.skip(f"no private libvirtd on this machine: {e}")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        c = libvirt.open(d.uri)
        try:
            yield c
        finally:
            c.close()
    finally:
        d.stop()


def define_and_read(conn: Any, xml: str) -> dict[str, str]:
    dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        return dx.flatten(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)


@pytest.mark.parametrize("case", MOVABLE, ids=lambda c: c.name)
def test_the_qemu_driver_accepts_the_source_and_every_rewrite(conn: Any,
                                                             case: dc.Case) -> None:
    define_and_read(conn, case.xml)  # the corpus itself is a valid definition here
    accepted = 0
    for flavor in case.flavors:
        if flavor.refused:
            continue
        xml = dc.rewrite(case, flavor)
        back = define_and_read(conn, xml)
        ours = dx.flatten(xml)
        assert (back["vcpu"], back.get("vcpu@current")) == (ours["vcpu"],
                                                            ours.get("vcpu@current"))
        assert int(back["memory"]) == topology.memory_kib(dx.parse(xml))
        accepted += 1
    assert accepted == sum(1 for f in case.flavors if not f.refused)


def test_the_corpus_is_all_here() -> None:
    assert len(MOVABLE) >= 40
    assert all(Path(c.path).exists() for c in MOVABLE)
