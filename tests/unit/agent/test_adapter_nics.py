"""New domains get their NICs: libvirt (``test:///default``) keeps type, source, MAC, model."""

from __future__ import annotations

import uuid
from pathlib import Path

from vmresize.agent.hypervisor import domainxml
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import DomainSpec
from vmresize.api.nics import Interface, NicType


def test_spawned_domain_has_every_nic_with_its_mac(tmp_path: Path) -> None:
    hv = LibvirtHypervisor("test:///default")
    name = f"nics-{uuid.uuid4().hex[:8]}"
    nics = (Interface(mac="52:54:00:00:00:01"),
            Interface(type=NicType.NETWORK, source="default", mac="52:54:00:00:00:02",
                      model="e1000e"),
            Interface(type=NicType.BRIDGE, source="br0", mac="fa:16:3e:00:00:03"))
    hv.define(DomainSpec(name=name, vcpus=1, memory_mib=64, disk=tmp_path / "d.qcow2",
                         interfaces=nics))
    try:
        flat = domainxml.flatten(hv.export(name))
    finally:
        hv.undefine(name)
        hv.close()
    assert flat["devices/interface[52:54:00:00:00:01]@type"] == "user"
    assert flat["devices/interface[52:54:00:00:00:01]/model@type"] == "virtio"
    assert flat["devices/interface[52:54:00:00:00:02]/source@network"] == "default"
    assert flat["devices/interface[52:54:00:00:00:02]/model@type"] == "e1000e"
    assert flat["devices/interface[fa:16:3e:00:00:03]/source@bridge"] == "br0"
