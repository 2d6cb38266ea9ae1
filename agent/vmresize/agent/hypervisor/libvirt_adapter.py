"""The one real :class:`~vmresize.agent.hypervisor.protocol.Hypervisor`: libvirt-python.

libvirt errors are translated here and nowhere else (``raise … from e``); whether a retry
can help is decided from the libvirt error code, as KubeVirt's wrapper does: a dead
connection or an operation refused in the current state is retryable, a bad definition
or a missing domain is not. Domain XML is built here from a :class:`DomainSpec`: TCG
(``type='qemu'``) on a q35 machine for QEMU, ``type='test'`` for the test driver, a
qcow2 root disk and the flavor's ephemeral and swap disks, the spec's NICs (user-mode, a
libvirt network or a bridge, each with its MAC and model), no graphics (the embedded
driver refuses ``<graphics type='none'>``), and the serial console to a log file. A
resized VM is not built here: it is defined from its source's own definition
(``domainxml.rewrite``).
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from xml.sax.saxutils import quoteattr

import libvirt
import libvirt_qemu

from vmresize.agent.errors import (
    DomainExistsError,
    DomainNotFoundError,
    HypervisorError,
    HypervisorUnreachableError,
    InvalidDomainConfigError,
    NoGuestAgentError,
    OperationInvalidError,
)
from vmresize.agent.hypervisor import embedded
from vmresize.agent.hypervisor.blockjobs import BlockJobs
from vmresize.agent.hypervisor.protocol import DomainSize, DomainSpec, HostCapacity, PowerState
from vmresize.api.nics import Interface, NicType

T = TypeVar("T")
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
OWNER_XMLNS = "https://vmresize.io/xmlns/owner/1"
"""Namespace of the ``<metadata>`` element naming the Instance that owns a domain."""
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
"""The virtio-serial port name libvirt talks to the QEMU guest agent on."""

_RETRYABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_OPERATION_FAILED,
    libvirt.VIR_ERR_RESOURCE_BUSY,
}
_CONNECTION_CODES = {
    libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
}
_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
}


def translate(e: libvirt.libvirtError, context: str) -> HypervisorError:
    """Map a libvirt error to our tree by its error code."""
    code = e.get_error_code()
    msg = f"{context}: {e.get_error_message() or e}"
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFoundError(msg)
    if code in (libvirt.VIR_ERR_DOM_EXIST,):
        return DomainExistsError(msg)
    if code in (libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL,
                libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_NO_SUPPORT):
        return InvalidDomainConfigError(msg)
    if code in _CONNECTION_CODES:
        return HypervisorUnreachableError(msg)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return OperationInvalidError(msg)
    return HypervisorError(msg, retryable=code in _RETRYABLE_CODES)


_silenced = False


def _silence_default_handler() -> None:
    """libvirt prints every error to stderr unless a handler is registered; we raise instead."""
    global _silenced
    if not _silenced:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _silenced = True


def domain_xml(spec: DomainSpec, *, domain_type: str) -> str:
    """Domain XML for ``spec`` (values escaped; names are DNS labels upstream anyway)."""
    serial = ""
    if spec.serial_log is not None:
        serial = (f"<serial type='file'><source path={quoteattr(str(spec.serial_log))}/>"
                  "<target port='0'/></serial>")
    machine = " machine='q35'" if domain_type == "qemu" else ""
    kib = spec.memory_mib * 1024
    nics = "".join(interface_xml(i) for i in spec.interfaces)
    extra = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(d.format)}/>"
        f"<source file={quoteattr(d.path)}/><target dev={quoteattr(d.target)} bus='virtio'/>"
        + (f"<serial>{_esc(d.serial)}</serial>" if d.serial else "") + "</disk>"
        for d in spec.extra_disks)
    return (
        f"<domain type={quoteattr(domain_type)}>"
        f"<name>{_esc(spec.name)}</name>"
        f"<memory unit='KiB'>{kib}</memory><currentMemory unit='KiB'>{kib}</currentMemory>"
        f"<vcpu placement='static'>{spec.vcpus}</vcpu>"
        f"<os><type arch='x86_64'{machine}>hvm</type><boot dev='hd'/></os>"
        "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
        "<devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file={quoteattr(str(spec.disk))}/><target dev='vda' bus='virtio'/></disk>"
        f"{extra}{nics}{serial}</devices></domain>"
    )


def interface_xml(nic: Interface) -> str:
    """One ``<interface>``; a NIC without a MAC gets one from libvirt (callers fill it in)."""
    source = ""
    if nic.type is NicType.NETWORK:
        source = f"<source network={quoteattr(nic.source or '')}/>"
    elif nic.type is NicType.BRIDGE:
        source = f"<source bridge={quoteattr(nic.source or '')}/>"
    mac = f"<mac address={quoteattr(nic.mac)}/>" if nic.mac else ""
    return (f"<interface type={quoteattr(nic.type.value)}>{mac}{source}"
            f"<model type={quoteattr(nic.model)}/></interface>")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class LibvirtHypervisor:
    """A libvirt connection behind the Hypervisor protocol. Thread-safe (libvirt is)."""

    def __init__(self, uri: str) -> None:
        _silence_default_handler()
        try:
            embedded.setup_for_uri(uri)
        except (ValueError, OSError) as e:
            raise HypervisorError(f"cannot prepare {uri}: {e}") from e
        self._uri = uri
        self._domain_type = "test" if uri.startswith("test:") else "qemu"
        self._lock = threading.Lock()
        try:
            self._conn: libvirt.virConnect = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise HypervisorUnreachableError(f"cannot open {uri}: {e}") from e
        self._jobs = BlockJobs(self._call, self._dom, self._domain_type)
        if uri.startswith("qemu:///embed"):
            # The embedded driver probes QEMU's capabilities (seconds: it runs QEMU) at the
            # first define, not at open; on a fresh root that first define is a resize's
            # Finish, while the VM is down (1.2 s of the demo's first downtime). Now.
            self._call("capabilities", self._conn.getCapabilities)

    @property
    def uri(self) -> str:
        """The URI this connection was opened with."""
        return self._uri

    @property
    def live_overlays(self) -> bool:
        """Whether pre-copy's overlays work here (:class:`BlockJobs`)."""
        return self._jobs.live_overlays

    def disk_chains(self, name: str) -> dict[str, list[Path]]:
        """Each disk's backing chain (:meth:`BlockJobs.disk_chains`)."""
        return self._jobs.disk_chains(name)

    def disk_tops(self, name: str) -> dict[str, Path]:
        """Each disk's top file (:meth:`BlockJobs.disk_tops`)."""
        return self._jobs.disk_tops(name)

    def add_overlays(self, name: str, overlays: dict[str, Path]) -> None:
        """Put an overlay on top of the named disks (:meth:`BlockJobs.add_overlays`)."""
        self._jobs.add_overlays(name, overlays)

    def commit_top(self, name: str, target: str, timeout: float) -> None:
        """Merge a disk's overlay back and pivot (:meth:`BlockJobs.commit_top`)."""
        self._jobs.commit_top(name, target, timeout)

    def _call(self, context: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except libvirt.libvirtError as e:
            raise translate(e, context) from e

    def _dom(self, name: str) -> libvirt.virDomain:
        return self._call(f"lookup {name}", lambda: self._conn.lookupByName(name))

    def define(self, spec: DomainSpec) -> None:
        """Define the domain from :func:`domain_xml` (``defineXML`` replaces an existing definition
        of that name)."""
        xml = domain_xml(spec, domain_type=self._domain_type)
        with self._lock:
            self._call(f"define {spec.name}", lambda: self._conn.defineXML(xml))

    def undefine(self, name: str) -> None:
        """Undefine the persistent domain; its disk stays. DomainNotFoundError if there is none."""
        dom = self._dom(name)
        # Keep UEFI variables: a held source is defined again from its saved definition.
        flags = 0 if self._domain_type == "test" else libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        self._call(f"undefine {name}", lambda: dom.undefineFlags(flags))

    def definition(self, name: str) -> str:
        """The persistent (inactive, secure) definition of ``name``: what a held source is
        defined again from."""
        dom = self._dom(name)
        xml: str = self._call(f"xml {name}", lambda: dom.XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
        return xml

    def define_xml(self, xml: str) -> None:
        """Define (or redefine) a persistent domain from ``xml`` as it stands."""
        with self._lock:
            self._call("define", lambda: self._conn.defineXML(xml))

    def start(self, name: str) -> None:
        """Start the domain unless it is running already."""
        dom = self._dom(name)
        if self._call(f"state {name}", dom.isActive):
            return
        self._call(f"start {name}", dom.create)

    def shutdown(self, name: str) -> None:
        """Ask a running guest to power off and return at once; a shut-off domain is left alone."""
        dom = self._dom(name)
        if not self._call(f"state {name}", dom.isActive):
            return
        self._call(f"shutdown {name}", dom.shutdown)

    def destroy(self, name: str) -> None:
        """Force a running domain off; one that is off (or stops meanwhile) is left alone."""
        dom = self._dom(name)
        if not self._call(f"state {name}", dom.isActive):
            return
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            # It may have stopped between the check and the call.
            if e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not dom.isActive():
                return
            raise translate(e, f"destroy {name}") from e

    def state(self, name: str) -> PowerState:
        """The domain's power state; libvirt states the table does not name are OTHER."""
        dom = self._dom(name)
        code = self._call(f"state {name}", dom.state)[0]
        return _STATES.get(code, PowerState.OTHER)

    def exists(self, name: str) -> bool:
        """Whether the domain is defined; only libvirt's 'no domain' means False, other errors
        raise."""
        try:
            self._conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise translate(e, f"lookup {name}") from e
        return True

    def get_size(self, name: str) -> DomainSize:
        """vCPUs (the current count if one is set) and memory (``currentMemory``) of the inactive
        XML."""
        dom = self._dom(name)
        xml = self._call(f"xml {name}", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        root = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
        vcpus = int(root.findtext("vcpu") or "0")
        cur = root.find("vcpu")
        if cur is not None and cur.get("current"):
            vcpus = int(cur.get("current") or vcpus)
        kib = int(root.findtext("currentMemory") or root.findtext("memory") or "0")
        return DomainSize(vcpus=vcpus, memory_mib=kib // 1024)

    def set_size(self, name: str, size: DomainSize) -> None:
        """Set the persistent vCPUs and memory, current and maximum, growing the maximum first and
        shrinking it last so libvirt accepts each call; applies at the next start."""
        dom = self._dom(name)
        kib = size.memory_mib * 1024
        ctx = f"resize {name}"
        old = self.get_size(name)
        with self._lock:
            if size.vcpus >= old.vcpus:  # raise the maximum first, then the current value
                self._call(ctx, lambda: dom.setVcpusFlags(
                    size.vcpus, _CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM))
                self._call(ctx, lambda: dom.setVcpusFlags(size.vcpus, _CONFIG))
            else:  # lowering: the current value first, then the maximum
                self._call(ctx, lambda: dom.setVcpusFlags(size.vcpus, _CONFIG))
                self._call(ctx, lambda: dom.setVcpusFlags(
                    size.vcpus, _CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM))
            if size.memory_mib >= old.memory_mib:
                self._call(ctx, lambda: dom.setMemoryFlags(
                    kib, _CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM))
                self._call(ctx, lambda: dom.setMemoryFlags(kib, _CONFIG))
            else:
                self._call(ctx, lambda: dom.setMemoryFlags(kib, _CONFIG))
                self._call(ctx, lambda: dom.setMemoryFlags(
                    kib, _CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM))

    def list_domains(self) -> list[str]:
        """Names of all defined domains, running or not, sorted."""
        doms = self._call("list domains", self._conn.listAllDomains)
        return sorted(d.name() for d in doms)

    def disk_path(self, name: str) -> Path | None:
        """The source file of the first file-backed ``device='disk'`` in the inactive XML, or
        None."""
        dom = self._dom(name)
        xml = self._call(f"xml {name}", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        for disk in ET.fromstring(xml).iterfind(  # noqa: S314 - libvirt's own XML
                "devices/disk"):
            src = disk.find("source")
            if disk.get("device", "disk") == "disk" and src is not None and src.get("file"):
                return Path(src.get("file") or "")
        return None

    def export(self, name: str) -> str:
        """Inactive | secure | migratable XML of the persistent definition."""
        dom = self._dom(name)
        flags = (libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
                 | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        xml: str = self._call(f"export {name}", lambda: dom.XMLDesc(flags))
        return xml

    def owner(self, name: str) -> str | None:
        """The ``uid`` of our ``<metadata>`` element in the persistent definition, if any."""
        dom = self._dom(name)
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OWNER_XMLNS, _CONFIG)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise translate(e, f"metadata {name}") from e
        return ET.fromstring(xml).get("uid") or None  # noqa: S314 - libvirt's own XML

    def set_owner(self, name: str, owner_uid: str) -> None:
        """Write our ``<metadata>`` element (persistent, and live if the domain runs)."""
        dom = self._dom(name)
        flags = _CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE
                           if self._call(f"state {name}", dom.isActive) else 0)
        xml = f"<owner uid={quoteattr(owner_uid)}/>"
        with self._lock:
            self._call(f"set owner of {name}", lambda: dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, "vmresize", OWNER_XMLNS, flags))

    def guest_ping(self, name: str, timeout_seconds: int) -> None:
        """``guest-ping`` through libvirt's qemu-agent-command, if the live definition has the
        ``org.qemu.guest_agent.0`` channel (without it QEMU has nobody to ask)."""
        dom = self._dom(name)
        root = ET.fromstring(self._call(f"xml of {name}", lambda: dom.XMLDesc(0)))  # noqa: S314
        if not any(t.get("name") == GUEST_AGENT_CHANNEL
                   for t in root.findall("./devices/channel/target")):
            raise NoGuestAgentError(f"domain {name} has no guest agent channel "
                               f"({GUEST_AGENT_CHANNEL}) in its definition")
        self._call(f"guest-ping {name}", lambda: libvirt_qemu.qemuAgentCommand(
            dom, '{"execute": "guest-ping"}', timeout_seconds, 0))

    def capacity(self) -> HostCapacity:
        """Host CPUs and memory from libvirt's node info."""
        info = self._call("host info", self._conn.getInfo)
        return HostCapacity(vcpus=int(info[2]), memory_mib=int(info[1]))

    def close(self) -> None:
        """Close the libvirt connection."""
        try:
            self._conn.close()
        except libvirt.libvirtError as e:
            raise translate(e, "close") from e
