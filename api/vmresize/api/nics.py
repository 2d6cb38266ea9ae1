"""Network interfaces of an Instance, and the MACs they keep (pure).

A NIC is a libvirt network, a host bridge or user-mode networking (no privileges, no
network: what the demo and the embedded QEMU driver use), with a device model (virtio by
default) and a MAC. A MAC the user does not give is generated once from the Instance's UID
and the NIC's position (:func:`generated_mac`): the same on every attempt and after any
crash, and recorded in the Instance's status. A resize keeps NICs and MACs as they are
(they travel inside the domain's own definition).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum

from pydantic import Field, model_validator

from vmresize.api.meta import Model

MAC = r"^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$"
"""Lowercase, unicast (the least significant bit of the first octet is clear)."""
QEMU_OUI = "52:54:00"
"""The prefix QEMU and libvirt use for the MACs they generate."""
MAX_INTERFACES = 16


class NicType(StrEnum):
    """What a NIC is plugged into."""

    NETWORK = "network"
    """A libvirt network on the host (``source`` names it)."""
    BRIDGE = "bridge"
    """A host bridge (``source`` names it)."""
    USER = "user"
    """User-mode networking (QEMU's slirp): no host setup at all."""


class Interface(Model):
    """One NIC of a VM."""

    type: NicType = NicType.USER
    """What it is plugged into."""
    source: str | None = Field(default=None, max_length=253, pattern=r"^[A-Za-z0-9._-]+$")
    """The libvirt network or bridge name; none for user-mode networking."""
    mac: str | None = Field(default=None, pattern=MAC)
    """The MAC address; generated (and then kept) when not given."""
    model: str = Field(default="virtio", max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    """The device model QEMU emulates (virtio, e1000e, rtl8139…)."""

    @model_validator(mode="after")
    def _source_matches_type(self) -> Interface:
        if (self.type is NicType.USER) == (self.source is not None):
            raise ValueError("a network or bridge NIC names its source; a user NIC has none")
        return self


SOURCE_RULE = {
    "rule": "!has(self.interfaces) || self.interfaces.all(i, "
            "(has(i.type) && i.type != 'user') == has(i.source))",
    "message": "a network or bridge interface names its source; a user interface has none",
}
"""The same check at admission (CEL), for ``Instance.spec``."""


def generated_mac(owner_uid: str, index: int) -> str:
    """A stable MAC for NIC ``index`` of the object ``owner_uid`` (QEMU's prefix)."""
    digest = hashlib.sha256(f"{owner_uid}/{index}".encode()).digest()
    return QEMU_OUI + "".join(f":{b:02x}" for b in digest[:3])


def with_macs(interfaces: Sequence[Interface], owner_uid: str) -> list[Interface]:
    """``interfaces`` with every missing MAC generated."""
    return [i if i.mac else i.model_copy(update={"mac": generated_mac(owner_uid, n)})
            for n, i in enumerate(interfaces)]
