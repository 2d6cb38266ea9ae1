"""The vmresize API: pydantic models of every custom resource, shared by operator and agent.

These models are the single source of truth for the CRDs in ``crds/`` and in the Helm chart
(see :mod:`vmresize.api.crdgen`). This package is pure: no Kubernetes client, no libvirt.
"""

from vmresize.api.flavor import Flavor, FlavorSpec
from vmresize.api.host import Allocation, Host, HostSpec, HostStatus
from vmresize.api.hosttask import HostTask, HostTaskSpec, HostTaskStatus, TaskAction, TaskPhase
from vmresize.api.instance import Instance, InstanceSpec, InstanceStatus
from vmresize.api.meta import API_VERSION, GROUP, VERSION, Condition, Resources
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec, VMResizeStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Allocation",
    "Condition",
    "Flavor",
    "FlavorSpec",
    "Host",
    "HostSpec",
    "HostStatus",
    "HostTask",
    "HostTaskSpec",
    "HostTaskStatus",
    "Instance",
    "InstanceSpec",
    "InstanceStatus",
    "ResizePhase",
    "Resources",
    "TaskAction",
    "TaskPhase",
    "VMResize",
    "VMResizeSpec",
    "VMResizeStatus",
]
