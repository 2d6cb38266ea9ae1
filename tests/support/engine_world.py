"""The in-memory world the operator engine's unit tests start from.

Ready Hosts with a migration endpoint, Flavors, an Instance on h1 and its VMResize ``r``,
put into a :class:`~tests.support.memstore.MemStorage` (or a subclass the test brings);
and the resize's phase read back. test_engine_steps, test_hostview and test_watchdog_engine
each built these same objects by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from tests.support.memstore import MemStorage
from vmresize.api.flavor import Flavor, FlavorSpec
from vmresize.api.host import Host, HostSpec, HostStatus, MigrationEndpoint
from vmresize.api.instance import Instance, InstancePhase, InstanceSpec, InstanceStatus
from vmresize.api.meta import Resources
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec, VMResizeStatus

NS = "tenant"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: short name -> (vCPUs, MiB, GiB)
SMALL_MEDIUM = {"small": (1, 1024, 10), "medium": (2, 2048, 20)}
M = TypeVar("M", bound=MemStorage)


def ready_host(name: str, heartbeat: datetime = T0) -> Host:
    """A ready Host of 8 vCPUs and 8704 MiB: less the 512 reserved, one 8 GiB flavor fits."""
    return Host(metadata={"name": name}, spec=HostSpec(), status=HostStatus(
        capacity=Resources(vcpus=8, memory_mib=8704, disk_gib=100), ready=True,
        heartbeat=heartbeat,
        migration_endpoint=MigrationEndpoint(address="127.0.0.1", port=22),
        host_key="ssh-ed25519 AAAA"))


def build_world(s: M, *, new_flavor: str, status: VMResizeStatus | None = None,
                hosts: Iterable[Host] = (), flavors: Mapping[str, tuple[int, int, int]]
                = SMALL_MEDIUM, instance_phase: InstancePhase = InstancePhase.ACTIVE) -> M:
    """``s`` holding ``hosts`` (default: ready h1 and h2), ``flavors``, Instance ``vm`` of
    flavor small on h1, and VMResize ``r`` of it to ``new_flavor`` with ``status``."""
    for host in tuple(hosts) or (ready_host("h1"), ready_host("h2")):
        s.put(host)
    for name, (vcpus, mib, gib) in flavors.items():
        s.put(Flavor(metadata={"name": name},
                     spec=FlavorSpec(vcpus=vcpus, memory_mib=mib, disk_gib=gib)))
    vcpus, mib, gib = flavors["small"]
    s.put(Instance(metadata={"name": "vm", "namespace": NS}, spec=InstanceSpec(flavor="small"),
                   status=InstanceStatus(phase=instance_phase, host="h1", flavor="small",
                                         vcpus=vcpus, memory_mib=mib, disk_gib=gib,
                                         domain_name="tenant.vm", disk_path="a/disk.qcow2")))
    s.put(VMResize(metadata={"name": "r", "namespace": NS},
                   spec=VMResizeSpec(instance_name="vm", flavor=new_flavor), status=status))
    return s


def resize_phase(s: MemStorage) -> ResizePhase:
    """The phase VMResize ``r`` is in now."""
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    return r.status.phase
