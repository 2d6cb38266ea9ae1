"""``Instance``: one VM, in a user's namespace.

The user owns ``spec``; the operator owns ``status``. ``status.activeResize`` is the lock
that allows one resize at a time; it is taken and released with resourceVersion-guarded
writes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from vmresize.api.meta import (
    DNS_LABEL,
    NAME_IS_LABEL,
    Condition,
    Model,
    PrinterColumn,
    Resource,
    age_column,
    immutable,
)
from vmresize.api.nics import MAX_INTERFACES, SOURCE_RULE, Interface
from vmresize.api.vmdisks import VMDisk

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class InstancePhase(StrEnum):
    """Where an instance is in its life; the operator sets it."""

    PENDING = "Pending"
    """New: not placed yet."""
    BUILDING = "Building"
    """Placed; its Spawn or Adopt task runs on the host."""
    ACTIVE = "Active"
    """Built (or adopted) and not being resized."""
    RESIZING = "Resizing"
    """A VMResize holds it and is moving or resizing it."""
    ERROR = "Error"
    """Building failed (or its flavor is missing), or a rollback failed and an admin must look."""
    DELETING = "Deleting"
    """Reserved: nothing sets it yet (a deleted Instance keeps its phase while Destroy runs)."""


class PowerState(StrEnum):
    """The instance's power state as the operator last learnt it from a HostTask."""

    RUNNING = "Running"
    """The domain runs."""
    SHUTOFF = "Shutoff"
    """The domain is defined but off."""
    UNKNOWN = "Unknown"
    """Not reported yet, or lost track of (after a failed rollback)."""


class ImageSource(Model):
    """Where a new instance's root disk comes from."""

    base_image: str | None = Field(default=None, max_length=253,
                                   pattern=r"^[A-Za-z0-9._-]+\.(qcow2|raw)$")
    """File name of a base image in the host's ``images/`` directory; none means a blank disk.
    The name declares the format (``*.qcow2`` or ``*.raw``): a format is never probed."""
    seed_pattern: str | None = Field(default=None, max_length=64)
    """Write this text at the start of a blank disk, so a copy can be recognised (demos)."""


class AdoptSource(Model):
    """An existing libvirt domain to take over instead of creating one."""

    domain_name: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._-]+$")
    """The domain's libvirt name on ``spec.host``. Its disk must lie under the storage root."""


class InstanceSpec(Model):
    """What the user wants."""

    flavor: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Flavor the VM is created with. A VMResize changes the running flavor."""
    host: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Host to create (or adopt) the VM on; the scheduler picks one when empty. Naming one
    is an admin's act (the chart's admission policy). Immutable."""
    image: ImageSource = Field(default_factory=ImageSource)
    """Root disk source for a new VM."""
    adopt: AdoptSource | None = None
    """Adopt an existing domain on ``host`` instead of creating one: an admin's act (the
    chart's admission policy); a domain another Instance owns is refused. Immutable."""
    interfaces: list[Interface] = Field(default_factory=list, max_length=MAX_INTERFACES)
    """NICs of a new VM (ignored when adopting: an adopted domain keeps its own)."""


class InstanceStatus(Model):
    """Where and how the VM runs now."""

    phase: InstancePhase = InstancePhase.PENDING
    """Lifecycle phase."""
    host: str | None = None
    """Host the VM lives on."""
    flavor: str | None = None
    """The flavor the VM runs with now (differs from spec.flavor after a resize)."""
    vcpus: int | None = None
    """Virtual CPUs the VM runs with."""
    memory_mib: int | None = Field(default=None, alias="memoryMiB")
    """Memory the VM runs with, MiB."""
    disk_gib: int | None = Field(default=None, alias="diskGiB")
    """Root disk size, GiB."""
    domain_name: str | None = None
    """libvirt domain name on ``host``."""
    disk_path: str | None = None
    """Root disk, relative to the host's storage root."""
    power_state: PowerState = PowerState.UNKNOWN
    """Last known power state."""
    interfaces: list[Interface] = Field(default_factory=list)
    """The NICs as defined, generated MACs included (kept across resizes)."""
    disks: list[VMDisk] = Field(default_factory=list)
    """Every file the VM is made of on ``host`` (what a resize moves and Confirm deletes)."""
    active_resize: str | None = None
    """Name of the VMResize that holds this instance (for people; the lock is the UID)."""
    active_resize_uid: str | None = None
    """UID of the VMResize that holds this instance: the one-resize-at-a-time lock."""
    current_task: str | None = None
    """Name of the one HostTask (Spawn, Adopt or Destroy) that may run for this instance
    now. Written before the task is created; an agent refuses Destroy unless named here."""
    message: str = ""
    """Last notable event, for people."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Ready`` (Active), and the kstatus conventions GitOps tools read: ``Reconciling``
    (being placed or built) and ``Stalled`` (in Error)."""


class Instance(Resource):
    """A VM managed by vmresize."""

    kind_name: ClassVar[str] = "Instance"
    plural: ClassVar[str] = "instances"
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    # Not "vmi": KubeVirt's VirtualMachineInstance has it, and kubectl would be ambiguous.
    short_names: ClassVar[list[str]] = ["inst"]
    root_validations: ClassVar[list[dict[str, Any]]] = [NAME_IS_LABEL]
    #: Placement is decided once: a later spec.host or spec.adopt would slip past the
    #: admission policy, which checks them on create.
    spec_validations: ClassVar[list[dict[str, Any]]] = [
        immutable("host"),
        immutable("adopt"),
        {"rule": "!has(self.adopt) || has(self.host)",
         "message": "spec.adopt needs spec.host: the host whose domain is adopted"},
        SOURCE_RULE,
    ]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Host", type="string", json_path=".status.host"),
        PrinterColumn(name="Flavor", type="string", json_path=".status.flavor"),
        PrinterColumn(name="Power", type="string", json_path=".status.powerState"),
        PrinterColumn(name="Resize", type="string", json_path=".status.activeResize"),
        PrinterColumn(name="Domain", type="string", json_path=".status.domainName", priority=1),
        age_column(),
    ]

    spec: InstanceSpec
    """Desired state."""
    status: InstanceStatus | None = None
    """Observed state."""


__all__ = ["DNS_LABEL", "AdoptSource", "ImageSource", "Instance", "InstancePhase",
           "InstanceSpec", "InstanceStatus", "PowerState"]
