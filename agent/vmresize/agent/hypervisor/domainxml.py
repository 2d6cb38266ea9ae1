"""A domain's own definition, read and changed as a resize needs (pure: no I/O, no libvirt).

The source's definition travels with the VM (DESIGN.md invariant 9). This module owns what
the agent reads from it and the one change it makes to it:

* :func:`inventory`: every disk (target, type, device, source file, format from
  ``<driver type>``, read-only, the ``<backingStore>`` chain if the XML carries one);
* :func:`unmovable`: why a domain cannot move (passthrough, disks outside the storage root,
  disk types it cannot copy, a disk without a recorded format, state beside the disks
  that does not move yet: an emulated TPM's, NVDIMM and virtio-pmem backing files, disk
  encryption secrets, a kernel or initrd for direct boot kept with the VM's files under
  the storage root): checked before power-off;
* :func:`rewrite`: the destination's definition: vCPUs (``<vcpu>``, ``<cpu><topology>``,
  NUMA cells) and memory from the new flavor, file paths mapped to the destination, and the
  name when it must change. Nothing else: NICs and MACs, CPU model, firmware, devices,
  metadata and UUID are kept (the topology and NUMA arithmetic is in :mod:`.topology`);
* :func:`size_refusal`: why :func:`rewrite` would refuse a flavor, asked before power-off;
* :func:`edit_disks`: a flavor's swap disk dropped, its new ephemeral or swap disk added;
* :func:`diff`: the set of changed paths between two definitions, so a test can say the
  changed set is exactly the expected one (with :func:`parse` and :func:`serialize`, from
  :mod:`.xmltree`).

The input is libvirt's own output (``XMLDesc``), parsed with the standard library. Formats
are never guessed: a file disk without ``<driver type>`` is refused by :func:`unmovable`.
Elements in other namespaces (metadata other tools wrote, ``<qemu:commandline>``) come
out with the prefixes and declarations they went in with, whatever the prefix (``ns0``
included): :func:`parse` keeps them as literal names, see there.
"""

from __future__ import annotations

import copy
import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from vmresize.agent.errors import InvalidDomainConfigError
from vmresize.agent.hypervisor import topology
from vmresize.agent.hypervisor.xmltree import diff as diff
from vmresize.agent.hypervisor.xmltree import flatten as flatten
from vmresize.agent.hypervisor.xmltree import parse as parse
from vmresize.agent.hypervisor.xmltree import serialize as serialize

COPYABLE_FORMATS = frozenset({"raw", "qcow2"})
"""Formats the agent copies, grows and passes to qemu-img with ``-f`` (never probed)."""
MEDIA_DEVICES = frozenset({"cdrom", "floppy"})
DISK_DEVICES = frozenset({"disk"}) | MEDIA_DEVICES
KIB_PER_MIB = 1024


@dataclass(frozen=True)
class Backing:
    """One layer below a disk, from ``<backingStore>``."""

    type: str
    source: str | None
    format: str | None


@dataclass(frozen=True)
class DiskInfo:
    """One ``<disk>`` of the domain."""

    target: str
    device: str
    type: str
    source: str | None
    """The file (``type='file'``); for other types a description of the source, or None."""
    format: str | None
    readonly: bool
    backing: tuple[Backing, ...] = ()
    serial: str | None = None

    @property
    def is_media(self) -> bool:
        """A CD-ROM or floppy: a read-only medium that may be empty."""
        return self.device in MEDIA_DEVICES


def _source_of(kind: str, el: ET.Element) -> str | None:
    src = el.find("source")
    if src is None:
        return None
    if kind == "file":
        return src.get("file")
    if kind == "block":
        return src.get("dev")
    if kind == "network":
        return f"{src.get('protocol', '?')}:{src.get('name', '')}"
    if kind == "volume":
        return f"{src.get('pool', '?')}/{src.get('volume', '')}"
    return src.get("file") or src.get("dev") or src.get("dir")


def _format_of(el: ET.Element) -> str | None:
    fmt = el.find("format")  # <backingStore><format type=.../>
    drv = el.find("driver")
    if drv is not None and drv.get("type"):
        return drv.get("type")
    return fmt.get("type") if fmt is not None else None


def _chain(disk: ET.Element) -> tuple[Backing, ...]:
    layers: list[Backing] = []
    node = disk.find("backingStore")
    while node is not None and node.get("type"):  # an empty <backingStore/> ends the chain
        kind = node.get("type", "")
        layers.append(Backing(kind, _source_of(kind, node), _format_of(node)))
        node = node.find("backingStore")
    return tuple(layers)


def inventory(xml: str | ET.Element) -> list[DiskInfo]:
    """Every ``<disk>`` of the domain, in definition order."""
    root = parse(xml) if isinstance(xml, str) else xml
    out = []
    for d in root.iterfind("devices/disk"):
        kind = d.get("type", "file")
        target = d.find("target")
        out.append(DiskInfo(
            target=target.get("dev", "?") if target is not None else "?",
            device=d.get("device", "disk"), type=kind, source=_source_of(kind, d),
            format=_format_of(d), readonly=d.find("readonly") is not None,
            backing=_chain(d), serial=(d.findtext("serial") or "").strip() or None))
    return out


def _nvram_file(root: ET.Element) -> ET.Element | None:
    """The element holding the NVRAM file's path: ``<nvram>`` itself (its text), or its
    ``<source file>`` when written the newer way (``<nvram type='file'>``)."""
    el = root.find("os/nvram")
    if el is None or el.get("type", "file") != "file":
        return None
    src = el.find("source")
    return src if el.get("type") and src is not None else el


def nvram(xml: str | ET.Element) -> str | None:
    """The per-VM firmware variables file (``<os><nvram>PATH`` or ``<nvram type='file'>
    <source file=PATH>``), which moves with the VM."""
    root = parse(xml) if isinstance(xml, str) else xml
    el = _nvram_file(root)
    if el is None:
        return None
    path = (el.get("file") if el.tag == "source" else el.text) or ""
    return path.strip() or None


def host_files(xml: str | ET.Element) -> list[str]:
    """Host files the domain writes besides its storage: serial, console and channel logs."""
    root = parse(xml) if isinstance(xml, str) else xml
    out = []
    for device in root.iterfind("devices/*"):
        if device.tag in ("serial", "console", "channel", "parallel"):
            src, log = device.find("source"), device.find("log")
            if device.get("type") == "file" and src is not None and src.get("path"):
                out.append(src.get("path", ""))
            if log is not None and log.get("file"):
                out.append(log.get("file", ""))
    return out


def under(root: str, path: str) -> bool:
    """Whether the absolute ``path`` lies strictly inside ``root``, lexically (the
    executor still resolves every path it opens with ``paths.confine``)."""
    if not path.startswith("/"):
        return False
    base = posixpath.normpath(root)
    return posixpath.normpath(path).startswith(base.rstrip("/") + "/")


def _file_reasons(what: str, path: str | None, fmt: str | None, root: str,
                  *, media: bool) -> list[str]:
    if path is None:
        return []
    if not under(root, path):
        if media:
            return [f"{what} ({path}) is a read-only medium outside the storage root {root}: "
                    "eject it or place it under the root before resizing"]
        return [f"{what} ({path}) is outside the storage root {root}"]
    if not fmt:
        return [f"{what} ({path}) has no format in the definition (<driver type>); "
                "formats are never probed"]
    if fmt not in COPYABLE_FORMATS:
        return [f"{what} ({path}) has format {fmt!r}; only {sorted(COPYABLE_FORMATS)} move"]
    return []


def unmovable(xml: str | ET.Element, root: str) -> list[str]:
    """Reasons the domain cannot be moved by copying its files (empty: it can)."""
    dom = parse(xml) if isinstance(xml, str) else xml
    reasons: list[str] = []
    for hd in dom.iterfind("devices/hostdev"):
        addr = hd.find("source/address")
        where = " ".join(f"{k}={v}" for k, v in sorted((addr.attrib if addr is not None
                                                         else {}).items()))
        reasons.append(f"host device passed through (<hostdev type={hd.get('type')!r}> "
                       f"{where}".rstrip() + ")")
    for nic in dom.iterfind("devices/interface"):
        if nic.get("type") in ("hostdev", "vdpa"):
            mac = nic.find("mac")
            reasons.append(f"NIC {mac.get('address') if mac is not None else '?'} is a "
                           f"passed-through host device (type={nic.get('type')!r})")
    for fs in dom.iterfind("devices/filesystem"):
        reasons.append(f"host directory shared into the guest (<filesystem> "
                       f"{_source_of(fs.get('type', 'mount'), fs)})")
    for disk in inventory(dom):
        what = f"disk {disk.target}"
        if disk.device not in DISK_DEVICES:
            reasons.append(f"{what} is a {disk.device!r} device (passthrough), not a copyable "
                           "disk")
        elif disk.type != "file":
            reasons.append(f"{what} is a {disk.type!r} disk ({disk.source}); only file-backed "
                           "disks can be copied")
        else:
            reasons += _file_reasons(what, disk.source, disk.format, root,
                                     media=disk.is_media)
        for depth, layer in enumerate(disk.backing, 1):
            lwhat = f"backing file {depth} of disk {disk.target}"
            if layer.type != "file":
                reasons.append(f"{lwhat} is a {layer.type!r} source ({layer.source})")
            else:
                reasons += _file_reasons(lwhat, layer.source, layer.format, root, media=False)
    path = nvram(dom)
    if path is not None and not under(root, path):
        reasons.append(f"firmware variables (NVRAM {path}) are outside the storage root {root}")
    nv = dom.find("os/nvram")
    if nv is not None and nv.get("type", "file") != "file":
        reasons.append(f"firmware variables (NVRAM) are a {nv.get('type')!r} source "
                       f"({_source_of(nv.get('type', ''), nv)}); only a file moves")
    for tag in ("kernel", "initrd", "dtb"):
        boot = (dom.findtext(f"os/{tag}") or "").strip()
        if boot and under(root, boot):  # outside the root: a host's file, like the firmware
            reasons.append(f"direct kernel boot: <{tag}> {boot} lies in the storage root, "
                           "with the VM's files, but does not move with them")
    return reasons + _state_beside(dom)


def _state_beside(dom: ET.Element) -> list[str]:
    """State the definition points at that lives outside the disks and does not move yet
    (DESIGN.md invariant 9: it moves, or the resize is refused with the reason)."""
    reasons = []
    for tpm in dom.iterfind("devices/tpm"):
        backend = tpm.find("backend")
        kind = backend.get("type", "?") if backend is not None else "?"
        if kind == "emulator":
            reasons.append("emulated TPM (<tpm> backend 'emulator'): its state (swtpm's, in "
                           "libvirt's state directory under the domain's UUID) does not move "
                           "yet")
        else:
            node = backend.find("device") if backend is not None else None
            where = f" {node.get('path')}" if node is not None and node.get("path") else ""
            reasons.append(f"host TPM passed through (<tpm> backend {kind!r}{where})")
    for mem in dom.iterfind("devices/memory"):
        path = (mem.findtext("source/path") or "").strip()
        if path:
            reasons.append(f"{mem.get('model', '?')} memory device backed by the host file "
                           f"{path}: its content does not move yet")
    for disk in dom.iterfind("devices/disk"):
        tgt = disk.find("target")
        dev = tgt.get("dev", "?") if tgt is not None else "?"
        for secret in disk.iterfind(".//encryption/secret"):
            reasons.append(f"disk {dev} is encrypted with the libvirt secret "
                           f"{secret.get('uuid') or secret.get('usage')}, kept in this host's "
                           "secret store: it does not move")
    return reasons


def _set_path(el: ET.Element, attr: str | None, paths: Mapping[str, str],
              required: bool, what: str) -> None:
    old = el.get(attr) if attr else (el.text or "").strip()
    if not old:
        return
    if old not in paths:
        if required:
            raise InvalidDomainConfigError(f"no destination path for {what} ({old})")
        return
    if attr:
        el.set(attr, paths[old])
    else:
        el.text = paths[old]


def rewrite(xml: str, *, vcpus: int, memory_mib: int, disk_paths: Mapping[str, str],
            name: str | None = None) -> str:
    """The destination's definition (see the module docstring).

    ``disk_paths`` maps every file the domain's own storage is made of (disk and backing
    sources, CD-ROM images, NVRAM) to its destination path; any of them missing is an error.
    Other host file paths (serial and console logs) are mapped when present in it, kept
    otherwise. Raises :class:`InvalidDomainConfigError` for what cannot be honoured.
    """
    dom = parse(xml)
    if name is not None:
        el = dom.find("name")
        if el is None:
            raise InvalidDomainConfigError("definition has no <name>")
        el.text = name
    topology.set_vcpus(dom, vcpus)
    topology.set_memory(dom, memory_mib * KIB_PER_MIB)
    for disk in dom.iterfind("devices/disk"):
        if disk.get("type", "file") != "file":
            continue
        tgt = disk.find("target")
        dev = tgt.get("dev", "?") if tgt is not None else "?"
        src = disk.find("source")
        if src is not None:
            _set_path(src, "file", disk_paths, True, f"disk {dev}")
        node = disk.find("backingStore")
        while node is not None:
            bsrc = node.find("source")
            if node.get("type") == "file" and bsrc is not None:
                _set_path(bsrc, "file", disk_paths, True, f"backing file of {dev}")
            node = node.find("backingStore")
    nv = _nvram_file(dom)
    if nv is not None:
        _set_path(nv, "file" if nv.tag == "source" else None, disk_paths, True, "NVRAM")
    for device in dom.iterfind("devices/*"):
        if device.tag == "disk":
            continue
        for child in (device.find("source"), device.find("log")):
            if child is not None:
                for attr in ("path", "file"):
                    _set_path(child, attr, disk_paths, False, device.tag)
    return serialize(dom)


def size_refusal(xml: str | ET.Element, *, vcpus: int, memory_mib: int) -> str | None:
    """Why :func:`rewrite` would refuse this flavor for this domain (vCPUs it cannot spread
    over the NUMA cells, memory below the memory devices' RAM or not in whole huge pages),
    or None: for the source to ask while the VM still runs (invariant 10)."""
    dom = copy.deepcopy(xml) if isinstance(xml, ET.Element) else parse(xml)
    try:
        topology.set_vcpus(dom, vcpus)
        topology.set_memory(dom, memory_mib * KIB_PER_MIB)
    except InvalidDomainConfigError as e:
        return str(e)
    return None


def rewrite_refusal(xml: str, *, vcpus: int, memory_mib: int) -> str | None:
    """Why :func:`rewrite` would refuse this flavor for this definition, or None: the sizes
    (:func:`size_refusal`), then the rewrite itself with every file of the domain kept at
    its path (where the files land is not what is asked here; the source's capture checks
    that each file moves). For the source to ask while the VM still runs (invariant 10)."""
    try:
        why = size_refusal(xml, vcpus=vcpus, memory_mib=memory_mib)
        if why is not None:
            return why
        dom = parse(xml)
        paths: dict[str, str] = {}
        for d in inventory(dom):
            for f in (d.source if d.type == "file" else None,
                      *(b.source for b in d.backing if b.type == "file")):
                if f:
                    paths[f] = f
        nv = nvram(dom)
        if nv:
            paths[nv] = nv
        rewrite(xml, vcpus=vcpus, memory_mib=memory_mib, disk_paths=paths)
    except InvalidDomainConfigError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class NewDisk:
    """A file-backed virtio disk to add to a definition."""

    path: str
    format: str
    target: str
    serial: str | None = None


def edit_disks(xml: str, *, drop: frozenset[str] = frozenset(),
               add: tuple[NewDisk, ...] = ()) -> str:
    """``xml`` without the file disks whose source is in ``drop`` and with ``add`` after
    the last disk (a flavor's swap and ephemeral disks); everything else is kept."""
    if not drop and not add:
        return xml
    dom = parse(xml)
    devices = dom.find("devices")
    if devices is None:
        raise InvalidDomainConfigError("definition has no <devices>")
    for disk in list(devices.iterfind("disk")):
        src = disk.find("source")
        if disk.get("type", "file") == "file" and src is not None and src.get("file") in drop:
            devices.remove(disk)
    taken = {d.target for d in inventory(dom)}
    where = max((i for i, el in enumerate(devices) if el.tag == "disk"), default=-1) + 1
    for n, new in enumerate(add):
        if new.target in taken:
            raise InvalidDomainConfigError(f"disk target {new.target} is taken already")
        el = ET.Element("disk", {"type": "file", "device": "disk"})
        ET.SubElement(el, "driver", {"name": "qemu", "type": new.format})
        ET.SubElement(el, "source", {"file": new.path})
        ET.SubElement(el, "target", {"dev": new.target, "bus": "virtio"})
        if new.serial:
            ET.SubElement(el, "serial").text = new.serial
        devices.insert(where + n, el)
    return serialize(dom)
