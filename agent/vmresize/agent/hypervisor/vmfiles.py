"""Which files a domain is made of, as :class:`~vmresize.api.vmdisks.VMDisk` (pure).

From the domain's own definition: every file-backed disk (root first, then ephemeral, swap
and volumes in definition order), every read-only medium that has an image, the layers of
each qcow2's backing chain (from ``<backingStore>`` when the definition carries it, else
from ``chain``: the caller's reading of the headers, with recorded formats only), and the
UEFI variables file. A flavor's ephemeral and swap disks are known by their serial
(:data:`vmresize.api.flavordisks.SERIALS`). Paths become relative to the storage root; a
shared backing file is listed once. Sizes are left to the caller (they need a ``stat``).

Call :func:`~vmresize.agent.hypervisor.domainxml.unmovable` first: this module assumes
every file it meets lies under the root and has a format.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence

from vmresize.agent.errors import InvalidDomainConfigError
from vmresize.agent.hypervisor import domainxml
from vmresize.api import flavordisks
from vmresize.api.vmdisks import DiskRole, VMDisk

ChainFn = Callable[[str, str], Sequence[tuple[str, str]]]
"""``(absolute path, format) -> [(absolute path, format), ...]`` of the layers below."""


def relative(root: str, path: str) -> str:
    """``path`` relative to ``root``; a path outside it is an :class:`InvalidDomainConfigError`."""
    if not domainxml.under(root, path):
        raise InvalidDomainConfigError(f"{path} is outside the storage root {root}")
    return posixpath.relpath(posixpath.normpath(path), posixpath.normpath(root))


def files(xml: str, root: str, chain: ChainFn | None = None) -> list[VMDisk]:
    """The files of the domain ``xml`` describes (see the module docstring)."""
    dom = domainxml.parse(xml)
    out: list[VMDisk] = []
    listed: set[str] = set()

    def add(disk: VMDisk) -> None:
        if disk.path not in listed:
            listed.add(disk.path)
            out.append(disk)

    backings: list[VMDisk] = []
    for d in domainxml.inventory(dom):
        if d.type != "file" or d.source is None:
            continue
        if d.format is None:
            raise InvalidDomainConfigError(f"disk {d.target} has no format")
        layers: Sequence[tuple[str, str | None]] = [(b.source or "", b.format)
                                                    for b in d.backing]
        if not layers and chain is not None and d.format == "qcow2":
            layers = list(chain(d.source, d.format))
        rel = relative(root, d.source)
        below = relative(root, layers[0][0]) if layers else None
        media = d.is_media
        add(VMDisk(path=rel, role=DiskRole.MEDIA if media else DiskRole.DISK,
                   use=None if media else flavordisks.use_of_serial(d.serial),
                   format=d.format, target=d.target, backing=below, source_path=d.source))
        for i, (path, fmt) in enumerate(layers):
            if fmt is None:
                raise InvalidDomainConfigError(f"backing file {path} of {d.target} has no format")
            nxt = relative(root, layers[i + 1][0]) if i + 1 < len(layers) else None
            backings.append(VMDisk(path=relative(root, path), role=DiskRole.BACKING,
                                   format=fmt, backing=nxt, source_path=path))
    for b in backings:  # after every disk, so the root disk stays first
        add(b)
    nv = domainxml.nvram(dom)
    if nv is not None:
        add(VMDisk(path=relative(root, nv), role=DiskRole.NVRAM, source_path=nv))
    return out


def path_map(moved: Sequence[VMDisk], dest_root: str) -> dict[str, str]:
    """For :func:`~vmresize.agent.hypervisor.domainxml.rewrite`: each file's path in the
    source's definition to its absolute path here (``moved`` as the destination sees
    them: ``path`` relative to ``dest_root``)."""
    return {f.source_path: posixpath.join(dest_root, f.path)
            for f in moved if f.source_path}
