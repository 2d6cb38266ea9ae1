"""``Flavor``: a cluster-wide size of VM, like a Nova flavor."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from vmresize.api.meta import Model, PrinterColumn, Resource, Resources, age_column

MAX_SWAP_MIB = 1024 * 1024
"""1 TiB: Nova has no bound; a larger swap disk is a mistake worth refusing."""


class FlavorSpec(Model):
    """What a VM of this flavor gets. The sizes are immutable."""

    vcpus: int = Field(ge=1, le=1024)
    """Virtual CPUs."""
    memory_mib: int = Field(ge=16, le=16 * 1024 * 1024, alias="memoryMiB")
    """Memory in MiB."""
    disk_gib: int = Field(ge=1, le=65536, alias="diskGiB")
    """Root disk in GiB. A resize never shrinks it."""
    ephemeral_gib: int = Field(default=0, ge=0, le=65536, alias="ephemeralGiB")
    """Extra ephemeral disk in GiB, counted against host disk capacity. New instances get
    it as a blank disk; a resize grows it and never shrinks it (a smaller one is refused)."""
    swap_mib: int = Field(default=0, ge=0, le=MAX_SWAP_MIB, alias="swapMiB")
    """Swap disk in MiB (0: none), counted against host disk capacity (rounded up to GiB).
    Its content is not kept: a resize recreates it at the new size, or drops it."""
    extra_specs: dict[str, str] = Field(default_factory=dict)
    """Free-form key/value hints, as Nova's extra specs (for example ``hw:cpu_policy``)."""

    def resources(self) -> Resources:
        """What one VM of this flavor claims on its host."""
        return Resources(
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            disk_gib=self.disk_gib + self.ephemeral_gib + -(-self.swap_mib // 1024),
        )


class Flavor(Resource):
    """A named VM size. Admins create flavors; users pick them for instances and resizes."""

    kind_name: ClassVar[str] = "Flavor"
    plural: ClassVar[str] = "flavors"
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    short_names: ClassVar[list[str]] = ["flv"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="VCPUs", type="integer", json_path=".spec.vcpus"),
        PrinterColumn(name="Memory-MiB", type="integer", json_path=".spec.memoryMiB"),
        PrinterColumn(name="Disk-GiB", type="integer", json_path=".spec.diskGiB"),
        PrinterColumn(name="Ephemeral-GiB", type="integer", json_path=".spec.ephemeralGiB",
                      priority=1),
        PrinterColumn(name="Swap-MiB", type="integer", json_path=".spec.swapMiB", priority=1),
        age_column(),
    ]
    #: Sizes are immutable, as Nova's flavors are: instances and resizes refer to a flavor
    #: by name, so editing its sizes would change what they mean under them. Extra specs
    #: stay editable (Nova lets admins set them on an existing flavor too).
    spec_validations: ClassVar[list[dict[str, Any]]] = [
        {"rule": f"self.{f} == oldSelf.{f}",
         "message": f"{f} is immutable: a Flavor's sizes never change (as in Nova); "
                    "create a new Flavor instead"}
        for f in ("vcpus", "memoryMiB", "diskGiB", "ephemeralGiB", "swapMiB")
    ]

    spec: FlavorSpec
    """The size."""
