"""``VMQuota``: hard limits on what one namespace holds on hosts, and its ledger of charges.

An admin owns ``spec.hard`` (instances, vCPUs, memory, disk); the operator owns ``status``.
The usage is the sum of the charges in ``status.charges``, keyed as Host claims are
(``<Kind>/<uid>`` of the holder): an Instance's charge is what it holds on its host, a
resize's what it holds on its destination, so during a resize both copies count, as they
do on the hosts. A charge is taken before the host claim and dropped after it, with a
write guarded by the quota's resourceVersion (``vmresize.operator.persistence.quota``), so
two requests in one namespace can never both take the last of it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vmresize.api.meta import Condition, Model, PrinterColumn, Resource, Resources, age_column


class QuotaLimits(Model):
    """Hard limits; an empty one is no limit."""

    instances: int | None = Field(default=None, ge=0)
    """Instances (each counted once, whatever its copies)."""
    vcpus: int | None = Field(default=None, ge=0)
    """Virtual CPUs, both copies of a resize counted."""
    memory_mib: int | None = Field(default=None, ge=0, alias="memoryMiB")
    """Memory in MiB, both copies of a resize counted."""
    disk_gib: int | None = Field(default=None, ge=0, alias="diskGiB")
    """Disk in GiB (root, ephemeral and swap, as on the hosts), both copies counted."""


class QuotaUsage(Model):
    """What the namespace holds on hosts now (the sum of the charges)."""

    instances: int = Field(default=0, ge=0)
    """Instances that hold a claim."""
    vcpus: int = Field(default=0, ge=0)
    """Virtual CPUs."""
    memory_mib: int = Field(default=0, ge=0, alias="memoryMiB")
    """Memory in MiB."""
    disk_gib: int = Field(default=0, ge=0, alias="diskGiB")
    """Disk in GiB."""


class QuotaCharge(Model):
    """One holder's share of the quota: what it holds (or is about to hold) on a host."""

    consumer: str
    """``<namespace>/<name>`` of the holder, for people."""
    kind: Literal["Instance", "VMResize"]
    """Instance: the VM where it lives; VMResize: its copy on the destination."""
    instances: int = Field(default=0, ge=0, le=1)
    """1 for an Instance, 0 for a resize (the same instance, a second copy)."""
    resources: Resources
    """vCPUs, memory and disk it holds."""


class VMQuotaSpec(Model):
    """What the admin allows the namespace."""

    hard: QuotaLimits = Field(default_factory=QuotaLimits)
    """The limits; a new Instance or a resize that would pass one is refused
    (``QuotaExceeded``, with the numbers)."""


class VMQuotaStatus(Model):
    """What the namespace holds, and who holds it."""

    used: QuotaUsage = Field(default_factory=QuotaUsage)
    """The sum of ``charges``."""
    charges: dict[str, QuotaCharge] = Field(default_factory=dict)
    """Every holder's charge, keyed ``<Kind>/<uid>`` as its Host claim is."""
    reason: str = ""
    """``QuotaExceeded`` after a refusal, else empty."""
    message: str = ""
    """The last refusal, with the numbers."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Exhausted``: True while some limit is reached (a request for more is refused)."""


class VMQuota(Resource):
    """Hard limits on the instances, vCPUs, memory and disk of one namespace. Tenants may
    read it; only admins change it."""

    kind_name: ClassVar[str] = "VMQuota"
    plural: ClassVar[str] = "vmquotas"
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    short_names: ClassVar[list[str]] = ["vmq"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Instances", type="integer", json_path=".status.used.instances"),
        PrinterColumn(name="Max-Instances", type="integer", json_path=".spec.hard.instances"),
        PrinterColumn(name="VCPUs", type="integer", json_path=".status.used.vcpus"),
        PrinterColumn(name="Max-VCPUs", type="integer", json_path=".spec.hard.vcpus"),
        PrinterColumn(name="Memory-MiB", type="integer", json_path=".status.used.memoryMiB"),
        PrinterColumn(name="Max-Memory-MiB", type="integer",
                      json_path=".spec.hard.memoryMiB"),
        PrinterColumn(name="Disk-GiB", type="integer", json_path=".status.used.diskGiB",
                      priority=1),
        PrinterColumn(name="Max-Disk-GiB", type="integer", json_path=".spec.hard.diskGiB",
                      priority=1),
        PrinterColumn(name="Message", type="string", json_path=".status.message", priority=1),
        age_column(),
    ]

    spec: VMQuotaSpec
    """The limits."""
    status: VMQuotaStatus | None = None
    """The usage and its charges."""


__all__ = ["QuotaCharge", "QuotaLimits", "QuotaUsage", "VMQuota", "VMQuotaSpec",
           "VMQuotaStatus"]
