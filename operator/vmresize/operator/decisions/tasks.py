"""Building HostTasks (pure): which host, domain, disk and size each step acts on.

Names are deterministic (:func:`vmresize.api.naming.task_name`), so a restarted operator
re-creating a task finds the one it already made. Labels let agents select their own host's
tasks and let the operator map a task event back to its owner.
"""

from __future__ import annotations

import posixpath

from vmresize.api import flavordisks, naming, nics, vmdisks
from vmresize.api.flavor import FlavorSpec
from vmresize.api.host import Host
from vmresize.api.hosttask import HostTask, HostTaskSpec, PeerHost, TaskAction, TaskFlavor
from vmresize.api.instance import Instance
from vmresize.api.naming import parse_task_name
from vmresize.api.resize import MigrationMode, VMResize
from vmresize.api.vmdisks import VMDisk
from vmresize.operator.decisions import bandwidth
from vmresize.operator.errors import NotReadyError

A = TaskAction
GIB = 1024**3


__all__ = ["envelope", "instance_task", "parse_task_name", "peer", "resize_task", "task_flavor"]


def task_flavor(f: FlavorSpec) -> TaskFlavor:
    """The size fields of a Flavor, as a HostTask carries them."""
    return TaskFlavor(vcpus=f.vcpus, memory_mib=f.memory_mib, disk_gib=f.disk_gib,
                      ephemeral_gib=f.ephemeral_gib, swap_mib=f.swap_mib)


def envelope(namespace: str, owner_uid: str, spec: HostTaskSpec, attempt: int) -> HostTask:
    """Wrap ``spec`` into a HostTask with its deterministic name and the host, owner and action
    labels."""
    name = naming.task_name(owner_uid, spec.action, attempt)
    return HostTask(kind=HostTask.kind_name, metadata={
        "name": name, "namespace": namespace,
        "labels": {naming.HOST_LABEL: spec.host, naming.OWNER_UID_LABEL: owner_uid,
                   naming.ACTION_LABEL: spec.action.value},
    }, spec=spec)


def peer(h: Host) -> PeerHost:
    """The migration endpoint and host key of ``h`` for a MigrateDisk task; NotReadyError
    until its agent publishes them."""
    st = h.status
    if st is None or st.migration_endpoint is None or not st.host_key:
        raise NotReadyError(f"host {h.name} publishes no migration endpoint or host key yet")
    return PeerHost(name=h.name, address=st.migration_endpoint.address,
                    port=st.migration_endpoint.port, host_key=st.host_key)


def resize_task(action: TaskAction, host: str, attempt: int, *, namespace: str,
                resize: VMResize, inst: Instance, new: FlavorSpec, old: TaskFlavor | None,
                dest: Host | None, power_off_timeout_seconds: int = 60,
                source: Host | None = None) -> HostTask:
    """The HostTask for one step of ``resize``. ``source``: the source Host, for its
    bandwidth limit (MigrateDisk)."""
    st = resize.status
    ist = inst.status
    assert st is not None
    assert ist is not None
    src_dom, src_disk = ist.domain_name, ist.disk_path
    spec = HostTaskSpec(host=host, action=action, owner=f"{resize.namespace}/{resize.name}",
                        owner_uid=resize.uid, instance=f"{inst.namespace}/{inst.name}",
                        instance_uid=inst.uid)
    transfer = resize.uid
    pre_copy = resize.spec.migration_mode is MigrationMode.PRE_COPY
    virtual = (ist.disk_gib or new.disk_gib) * GIB
    files = _files(action, ist.disks, st.dest_disk_path, transfer, st.source_disks, new,
                   virtual if pre_copy else None)
    if files:
        spec = spec.model_copy(update={"disks": files})
    if action is A.PREPARE:
        spec = spec.model_copy(update={
            "domain_name": st.dest_domain_name, "disk_path": st.dest_disk_path,
            "flavor": task_flavor(new), "transfer_id": transfer,
            "expected_bytes": (ist.disk_gib or new.disk_gib) * GIB})
    elif action is A.MIGRATE_DISK:
        if dest is None:
            raise NotReadyError(f"destination host {st.dest_host} is gone")
        spec = spec.model_copy(update={
            "domain_name": src_dom, "disk_path": src_disk, "peer": peer(dest),
            "peer_disk_path": st.dest_disk_path, "transfer_id": transfer,
            "power_off_timeout_seconds": power_off_timeout_seconds,
            "flavor": task_flavor(new)})   # checked against the definition before power-off
        src_limit = source.spec.migration_bandwidth_mibps if source is not None else None
        limit = bandwidth.effective(resize.spec.bandwidth_mibps,
                                    (source.name if source else host, src_limit),
                                    (dest.name, dest.spec.migration_bandwidth_mibps))
        spec = spec.model_copy(update={"bandwidth_mibps": limit.mibps,
                                       "host_bandwidth_mibps": src_limit,
                                       "bandwidth_note": limit.note})
    elif action is A.FINISH:
        spec = spec.model_copy(update={
            "domain_name": st.dest_domain_name, "disk_path": st.dest_disk_path,
            "flavor": task_flavor(new), "expected_checksum": st.source_checksum,
            "transfer_id": transfer})   # lets the agent check the receipt is complete
    elif action is A.CLEANUP_DEST:
        spec = spec.model_copy(update={"domain_name": st.dest_domain_name,
                                       "disk_path": st.dest_disk_path,
                                       "transfer_id": transfer})   # and forget it
    elif action is A.HEALTH_CHECK:
        ac = resize.spec.auto_confirm
        spec = spec.model_copy(update={"domain_name": st.dest_domain_name})
        if ac is not None and ac.check is not None:
            spec = spec.model_copy(update={"health_check": ac.check,
                                           "deadline": st.health_deadline,
                                           "period_seconds": ac.period_seconds})
        # else the timer's auto-confirm asks only whether the domain runs there
        # (decisions.confirm_check): no probe, no deadline
    elif action in (A.CONFIRM, A.RESTORE_SOURCE):
        spec = spec.model_copy(update={"domain_name": src_dom, "disk_path": src_disk,
                                       "flavor": old if action is A.RESTORE_SOURCE else None})
    return envelope(namespace, resize.uid, spec, attempt)


def _files(action: TaskAction, source: list[VMDisk], dest_disk: str | None, transfer: str,
           sent: list[VMDisk] | None, new: FlavorSpec, pre_copy: int | None = None
           ) -> list[VMDisk]:
    """The VM's files as each step needs them (none: the single-disk tasks of before).
    ``pre_copy`` (the root disk's virtual size): Prepare, MigrateDisk and CleanupDest also
    list the disks' overlays."""
    if not source or not dest_disk:
        return []
    if action in (A.CONFIRM, A.DESTROY):
        return list(source)
    moved = vmdisks.destination(source, posixpath.dirname(dest_disk), transfer,
                                pre_copy=pre_copy is not None,
                                virtual_bytes=pre_copy or 0)
    if action is A.MIGRATE_DISK:
        return moved
    if action is A.FINISH:
        return vmdisks.arrived(sent) if sent else []
    if action is A.PREPARE:
        return vmdisks.arrived(moved)
    if action is A.CLEANUP_DEST:  # and the disks Finish may have made for the new flavor
        landed = vmdisks.arrived(moved)
        return landed + flavordisks.plan(landed, new).added
    return []


def instance_task(action: TaskAction, host: str, *, namespace: str, inst: Instance,
                  flavor: FlavorSpec | None) -> HostTask:
    """Spawn, Adopt or Destroy for an Instance."""
    ist = inst.status
    spec = HostTaskSpec(host=host, action=action, owner=f"{inst.namespace}/{inst.name}",
                        owner_uid=inst.uid, instance=f"{inst.namespace}/{inst.name}",
                        instance_uid=inst.uid)
    if action is A.SPAWN:
        assert flavor is not None
        spec = spec.model_copy(update={
            "domain_name": naming.domain_name(inst.namespace, inst.name),
            "disk_path": naming.disk_path(inst.namespace, inst.name, inst.uid),
            "flavor": task_flavor(flavor), "base_image": inst.spec.image.base_image,
            "seed_pattern": inst.spec.image.seed_pattern,
            "interfaces": nics.with_macs(inst.spec.interfaces, inst.uid)})
    elif action is A.ADOPT:
        assert inst.spec.adopt is not None
        spec = spec.model_copy(update={"domain_name": inst.spec.adopt.domain_name})
    elif action is A.DESTROY:
        spec = spec.model_copy(update={"domain_name": ist.domain_name if ist else None,
                                       "disk_path": ist.disk_path if ist else None,
                                       "disks": ist.disks if ist else []})
    return envelope(namespace, inst.uid, spec, 0)
