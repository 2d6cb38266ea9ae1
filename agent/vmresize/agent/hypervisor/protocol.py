"""The agent's seam over a hypervisor: a narrow ``Hypervisor`` protocol and its data types.

The executor only ever talks to this protocol. ``libvirt_hypervisor`` is the one real
adapter (libvirt ``test:///default`` in fast tests, ``qemu:///embed`` with real QEMU in e2e
tests and the demo). Errors of the underlying library never cross this seam: adapters
translate them into :class:`~vmresize.agent.errors.HypervisorError` subclasses (defined with
the rest of the agent's tree in :mod:`vmresize.agent.errors`), whose ``retryable`` says
whether running the step again can help (KubeVirt's libvirt wrapper makes the same call).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from vmresize.agent.hypervisor.domainxml import NewDisk
from vmresize.api.nics import Interface


class PowerState(StrEnum):
    """Coarse power state of a domain, as reported in task results."""

    RUNNING = "Running"
    SHUTOFF = "Shutoff"
    PAUSED = "Paused"
    SHUTTING_DOWN = "ShuttingDown"
    CRASHED = "Crashed"
    OTHER = "Other"


@dataclass(frozen=True)
class DomainSize:
    """vCPUs and memory of a domain's persistent definition."""

    vcpus: int
    memory_mib: int


@dataclass(frozen=True)
class DomainSpec:
    """Everything needed to define a new VM: name, size, its root disk (absolute path), the
    flavor's ephemeral and swap disks, and its NICs (MACs filled in)."""

    name: str
    vcpus: int
    memory_mib: int
    disk: Path
    serial_log: Path | None = None
    interfaces: tuple[Interface, ...] = ()
    extra_disks: tuple[NewDisk, ...] = ()


@dataclass(frozen=True)
class HostCapacity:
    """Physical compute of the host as the hypervisor sees it."""

    vcpus: int
    memory_mib: int


class Hypervisor(Protocol):
    """What the executor needs from a hypervisor. Every method may raise HypervisorError."""

    @property
    def uri(self) -> str:
        """The connection URI, published in Host status."""
        ...

    def define(self, spec: DomainSpec) -> None:
        """Define (or redefine) a persistent domain; it stays shut off."""
        ...

    def undefine(self, name: str) -> None:
        """Remove the persistent definition (the disk and firmware variables are not
        touched). DomainNotFoundError if absent."""
        ...

    def definition(self, name: str) -> str:
        """The domain's persistent definition (XML, secure parts included), as
        :meth:`define_xml` takes it back."""
        ...

    def define_xml(self, xml: str) -> None:
        """Define a domain from a definition :meth:`definition` returned (same UUID)."""
        ...

    def start(self, name: str) -> None:
        """Start a defined domain; a running domain is left alone."""
        ...

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI). Returns at once; poll :meth:`state`."""
        ...

    def destroy(self, name: str) -> None:
        """Pull the plug; a shut-off domain is left alone."""
        ...

    def state(self, name: str) -> PowerState:
        """Current power state."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a domain of that name is defined."""
        ...

    def get_size(self, name: str) -> DomainSize:
        """vCPUs and memory of the persistent definition."""
        ...

    def set_size(self, name: str, size: DomainSize) -> None:
        """Change the persistent vCPUs and memory, maximums and current (raising maximums first)."""
        ...

    def list_domains(self) -> list[str]:
        """Names of all defined domains."""
        ...

    def disk_path(self, name: str) -> Path | None:
        """Absolute path of the domain's first file-backed disk, if any."""
        ...

    def export(self, name: str) -> str:
        """The persistent definition as it travels to another host: inactive, with secure
        parts, migratable (libvirt's defaults a destination adds back are left out)."""
        ...

    def owner(self, name: str) -> str | None:
        """UID of the Instance that owns the domain, as recorded by :meth:`set_owner`."""
        ...

    def set_owner(self, name: str, owner_uid: str) -> None:
        """Record in the domain's persistent definition that ``owner_uid`` owns it."""
        ...

    def guest_ping(self, name: str, timeout_seconds: int) -> None:
        """Ask the QEMU guest agent in the running domain for ``guest-ping``. NoGuestAgentError if
        the domain has no agent channel; another HypervisorError if the agent is silent."""
        ...

    @property
    def live_overlays(self) -> bool:
        """Whether :meth:`add_overlays` and :meth:`commit_top` work here (pre-copy)."""
        ...

    def disk_tops(self, name: str) -> dict[str, Path]:
        """Each file-backed disk's target and the file the guest writes now."""
        ...

    def disk_chains(self, name: str) -> dict[str, list[Path]]:
        """Each file-backed disk's target and its chain as the guest has it now, the file
        it writes first."""
        ...

    def add_overlays(self, name: str, overlays: dict[str, Path]) -> None:
        """Running domain: a new qcow2 on top of each named disk (target -> file), all or
        none; the disks below no longer change."""
        ...

    def commit_top(self, name: str, target: str, timeout: float) -> None:
        """Running domain: merge the top layer of ``target`` into the file below and
        switch the guest to that file."""
        ...

    def capacity(self) -> HostCapacity:
        """Host CPUs and memory."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
