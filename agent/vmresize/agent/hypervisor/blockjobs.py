"""Pre-copy's libvirt operations: external disk-only overlays and merging them back.

A mixin of :class:`~vmresize.agent.hypervisor.libvirt_adapter.LibvirtHypervisor` (which
provides the connection and error translation). Measured on libvirt 9.0 / QEMU 7.2:

* ``snapshotCreateXML`` with ``DISK_ONLY | NO_METADATA | ATOMIC`` puts a new qcow2 on top
  of each named disk of a running domain (libvirt creates the file, records the backing
  file and its format in it, and rewrites the live and the persistent definition to it);
  every other disk is listed with ``snapshot='no'``, so read-only media stay as they are.
  No snapshot metadata is kept: nothing outside the files and the definition remembers it.
* ``blockCommit`` with ``ACTIVE | SHALLOW`` merges the top layer into the one directly
  below (never further down a chain); once the job is ready, ``blockJobAbort(PIVOT)``
  switches the guest back to the lower file (live and persistent definition) and waits
  for the job's end. A job found running (an agent killed mid-way) is resumed, not
  started again.
* A commit can fail (no space or an I/O error on the file below): QEMU ends the job, the
  guest goes on writing to the top layer, and the job is simply gone. "No job" is
  therefore never read as "pivoted": the guest's disks are read again, and a job that
  vanished while the top layer is still the guest's is an error. So is a pivot libvirt
  refuses for any reason but "not ready yet".
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar
from xml.sax.saxutils import quoteattr

import libvirt

from vmresize.agent.errors import HypervisorError

T = TypeVar("T")


class LibvirtCall(Protocol):
    """Runs one libvirt call, its errors translated with ``context`` (the adapter's)."""

    def __call__(self, context: str, fn: Callable[[], T]) -> T:
        """The call's result."""
        ...
COMMIT_POLL_SECONDS = 0.05
_SNAPSHOT_FLAGS = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                   | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                   | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
_COMMIT_FLAGS = (libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
                 | libvirt.VIR_DOMAIN_BLOCK_COMMIT_SHALLOW)


def snapshot_xml(targets: list[str], overlays: dict[str, Path]) -> str:
    """The disk-only snapshot: an external qcow2 for each target in ``overlays``, none for
    the other ``targets``."""
    disks = []
    for t in targets:
        if t in overlays:
            disks.append(f"<disk name={quoteattr(t)} snapshot='external'><driver type='qcow2'/>"
                         f"<source file={quoteattr(str(overlays[t]))}/></disk>")
        else:
            disks.append(f"<disk name={quoteattr(t)} snapshot='no'/>")
    return ("<domainsnapshot><name>vmresize-precopy</name><disks>" + "".join(disks)
            + "</disks></domainsnapshot>")


class BlockJobs:
    """Overlay and commit operations (see the module docstring), on the adapter's
    connection: ``call`` runs a libvirt call and translates its errors, ``dom`` looks a
    domain up, ``domain_type`` is the driver's (``test`` has no block layer)."""

    def __init__(self, call: LibvirtCall,
                 dom: Callable[[str], libvirt.virDomain], domain_type: str) -> None:
        self._call = call
        self._dom = dom
        self._domain_type = domain_type

    @property
    def live_overlays(self) -> bool:
        """Whether this driver runs real disks (the test driver has no block layer)."""
        return self._domain_type != "test"

    def disk_chains(self, name: str) -> dict[str, list[Path]]:
        """Each file-backed disk's target and its chain as the running guest has it (live
        definition: the top first, then each ``backingStore`` below)."""
        dom = self._dom(name)
        xml = self._call(f"xml {name}", lambda: dom.XMLDesc(0))
        out: dict[str, list[Path]] = {}
        for disk in ET.fromstring(xml).iterfind("devices/disk"):  # noqa: S314 - libvirt's
            src, tgt = disk.find("source"), disk.find("target")
            if src is None or not src.get("file") or tgt is None or not tgt.get("dev"):
                continue
            chain, node = [Path(src.get("file") or "")], disk.find("backingStore")
            while node is not None and (below := node.find("source")) is not None \
                    and below.get("file"):
                chain.append(Path(below.get("file") or ""))
                node = node.find("backingStore")
            out[tgt.get("dev") or ""] = chain
        return out

    def disk_tops(self, name: str) -> dict[str, Path]:
        """Each file-backed disk's target and the file the running guest writes (live
        definition; the persistent one when the domain is off)."""
        dom = self._dom(name)
        xml = self._call(f"xml {name}", lambda: dom.XMLDesc(0))
        out: dict[str, Path] = {}
        for disk in ET.fromstring(xml).iterfind("devices/disk"):  # noqa: S314 - libvirt's
            src, tgt = disk.find("source"), disk.find("target")
            if src is not None and src.get("file") and tgt is not None and tgt.get("dev"):
                out[tgt.get("dev") or ""] = Path(src.get("file") or "")
        return out

    def add_overlays(self, name: str, overlays: dict[str, Path]) -> None:
        """Put the qcow2 ``overlays[target]`` on top of each named disk of the running
        domain, all at once or none (``ATOMIC``); the files must not exist."""
        dom = self._dom(name)
        xml = self._call(f"xml {name}", lambda: dom.XMLDesc(0))
        targets = [t.get("dev") or "" for t in ET.fromstring(xml).iterfind(  # noqa: S314
            "devices/disk/target")]
        missing = set(overlays) - set(targets)
        if missing:
            raise HypervisorError(f"{name} has no disk {sorted(missing)}")
        snap = snapshot_xml(targets, overlays)
        self._call(f"overlay {name}", lambda: dom.snapshotCreateXML(snap, _SNAPSHOT_FLAGS))

    def commit_top(self, name: str, target: str, timeout: float) -> None:
        """Merge the running guest's top layer of ``target`` into the file below it and
        switch the guest to that file (see the module docstring); at most ``timeout``
        seconds of waiting for the job."""
        dom = self._dom(name)
        top = self.disk_tops(name).get(target)
        if not self._call(f"job {name}/{target}", lambda: dom.blockJobInfo(target, 0)):
            self._call(f"commit {name}/{target}",
                       lambda: dom.blockCommit(target, None, None, 0, _COMMIT_FLAGS))
        deadline = time.monotonic() + timeout
        while True:
            info = self._call(f"job {name}/{target}", lambda: dom.blockJobInfo(target, 0))
            if not info:  # the job ended: pivoted, or failed (module docstring)
                now = self.disk_tops(name).get(target)
                if now is not None and now != top:
                    return
                raise HypervisorError(
                    f"committing {name}/{target}: the job ended without switching the "
                    f"guest off {top} (the commit into the file below failed; QEMU's "
                    "log says why, e.g. no space or an I/O error there)", retryable=True)
            if info.get("end", 0) and info.get("cur") == info.get("end"):
                try:
                    dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                    return
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE:
                        raise HypervisorError(f"pivot {name}/{target}: {e}",
                                              retryable=True) from e
                    # not ready yet: the mirror converges while the guest writes
            if time.monotonic() > deadline:
                raise HypervisorError(f"committing {name}/{target} did not finish within "
                                      f"{timeout:.0f}s", retryable=True)
            time.sleep(COMMIT_POLL_SECONDS)
