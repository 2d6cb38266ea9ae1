"""Shared building blocks of the API: the base model, resource envelope, conditions, sizes.

Every model is camelCase on the wire (``alias_generator=to_camel``) and accepts snake_case
in Python (``populate_by_name``). Field docstrings become the CRD descriptions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "vmresize.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: A DNS-1123 label: what Kubernetes accepts as a namespace name. Names of instances and
#: flavors become libvirt domain names and directories, so they may hold no dot or slash.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_MAX = 63

#: CEL that holds ``metadata.name`` to a DNS-1123 label (CRD names otherwise allow dots).
NAME_IS_LABEL = {
    "rule": f"self.metadata.name.matches('{DNS_LABEL}') && size(self.metadata.name) <= 63",
    "message": "metadata.name must be a DNS-1123 label: lowercase letters, digits and '-', "
    "at most 63 characters, no '.' or '/'",
}


def immutable(field: str) -> dict[str, str]:
    """CEL: an optional field keeps the value (or absence) it was created with."""
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field}) && "
        f"(!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"{field} is immutable",
    }


class Model(BaseModel):
    """Base of every API model: camelCase aliases, documented fields, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict as it is sent to the API server (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Resources(Model):
    """An amount of compute: what a flavor asks for, a host offers, or a claim holds."""

    vcpus: int = Field(default=0, ge=0)
    """Virtual CPUs."""
    memory_mib: int = Field(default=0, ge=0, alias="memoryMiB")
    """Memory in MiB."""
    disk_gib: int = Field(default=0, ge=0, alias="diskGiB")
    """Disk in GiB."""

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            vcpus=self.vcpus + other.vcpus,
            memory_mib=self.memory_mib + other.memory_mib,
            disk_gib=self.disk_gib + other.disk_gib,
        )


class Condition(Model):
    """A Kubernetes-style condition, so that ``kubectl wait --for=condition=X`` works."""

    type: str
    """CamelCase condition type, for example ``Ready`` or ``VerifyResize``."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = ""
    """One CamelCase word for machines."""
    message: str = ""
    """A sentence for people."""
    last_transition_time: datetime | None = None
    """When ``status`` last changed."""
    observed_generation: int | None = None
    """The ``metadata.generation`` this condition was computed from."""


def set_condition(
    conditions: list[Condition], new: Condition, now: datetime
) -> list[Condition]:
    """Return ``conditions`` with ``new`` in place; the transition time moves only on change."""
    out: list[Condition] = []
    replaced = False
    for c in conditions:
        if c.type == new.type:
            replaced = True
            moved = c.status != new.status
            out.append(new.model_copy(update={
                "last_transition_time": now if moved else (c.last_transition_time or now),
            }))
        else:
            out.append(c)
    if not replaced:
        out.append(new.model_copy(update={"last_transition_time": now}))
    return out


class PrinterColumn(Model):
    """One ``additionalPrinterColumns`` entry of a CRD."""

    name: str
    """Column header."""
    type: str
    """OpenAPI type of the value."""
    json_path: str = Field(alias="jsonPath")
    """Where the value is."""
    priority: int = 0
    """0 shows always; 1 only with ``-o wide``."""
    description: str = ""
    """What the column shows."""


class Resource(Model):
    """The envelope of a custom resource. Subclasses set the CRD facts as class variables."""

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    scope: ClassVar[Literal["Namespaced", "Cluster"]]
    short_names: ClassVar[list[str]] = []
    printer_columns: ClassVar[list[PrinterColumn]] = []
    #: CEL rules (``x-kubernetes-validations`` entries) at the root and on ``spec``.
    root_validations: ClassVar[list[dict[str, Any]]] = []
    spec_validations: ClassVar[list[dict[str, Any]]] = []
    #: Spec and status are loaded leniently from the API: it may add fields we do not know.
    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    """``vmresize.io/v1alpha1``."""
    kind: str = ""
    """The resource kind."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Standard Kubernetes object metadata."""

    @classmethod
    def from_body(cls, body: Any) -> Self:
        """Parse an object as the API server (or kopf) hands it over."""
        return cls.model_validate(dict(body))

    @property
    def name(self) -> str:
        """``metadata.name``, or an empty string."""
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        """``metadata.namespace``; empty for cluster-scoped kinds."""
        return str(self.metadata.get("namespace", ""))

    @property
    def uid(self) -> str:
        """``metadata.uid``, or an empty string before the API server assigned one."""
        return str(self.metadata.get("uid", ""))

    @property
    def resource_version(self) -> str:
        """``metadata.resourceVersion``, which guards a status write against a concurrent one."""
        return str(self.metadata.get("resourceVersion", ""))


def age_column() -> PrinterColumn:
    """The usual ``AGE`` printer column, from the creation timestamp."""
    return PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp")
