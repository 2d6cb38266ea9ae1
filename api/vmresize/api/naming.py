"""Names and labels that the operator and the agents must agree on.

Task names are deterministic, so a restarted operator finds the task it already made.
Disk paths are relative to a host's storage root and built only from DNS-1123 labels and
UIDs, so no user string can escape the root; the agent still checks every path.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from vmresize.api.hosttask import TaskAction

HOST_LABEL = "vmresize.io/host"
"""On a HostTask: the host whose agent must carry it out."""
OWNER_UID_LABEL = "vmresize.io/owner-uid"
"""On a HostTask: UID of the VMResize or Instance it belongs to."""
ACTION_LABEL = "vmresize.io/action"
"""On a HostTask: its action, for ``kubectl get hosttasks -l``."""
WRITER_ANNOTATION = "vmresize.io/written-by"
"""On a HostTask: the vmresize version of the operator that wrote it, so that an agent
that cannot read the task says which two versions differ (issue 18, finding 7)."""
DEFAULT_NAMESPACE = "vmresize-system"
"""Where the operator keeps HostTasks and the migration key Secret."""
MIGRATION_PORT = 2222
"""Default port of the agents' migration SSH service."""
DISK_FILE = "disk.qcow2"


def task_name(owner_uid: str, action: TaskAction, attempt: int = 0) -> str:
    """``<owner uid>-<action>-<attempt>``: one name per step and attempt of one owner.

    The whole UID (36 characters, DNS-1123 already): with a prefix of it, tens of thousands
    of owners make a collision likely, and one owner would read another's task results.
    """
    return f"{owner_uid}-{action.value.lower()}-{attempt}"


def parse_task_name(name: str | None) -> tuple[TaskAction | None, int]:
    """:func:`task_name` back to (action, attempt); (None, 0) for anything else."""
    if not name:
        return None, 0
    parts = name.rsplit("-", 2)
    by_lower = {a.value.lower(): a for a in TaskAction}
    try:
        return by_lower.get(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return None, 0


def domain_name(namespace: str, instance: str, suffix: str = "") -> str:
    """libvirt domain name of an instance copy: ``<namespace>.<instance>[.<suffix>]``."""
    base = f"{namespace}.{instance}"
    return f"{base}.{suffix}" if suffix else base


def disk_path(namespace: str, instance: str, placement_uid: str) -> str:
    """Disk of one copy of an instance, relative to the storage root."""
    return f"instances/{namespace}/{instance}/{placement_uid}/{DISK_FILE}"


def package_version() -> str:
    """The installed vmresize version (operator and agent alike), or ``0.0.0+unknown``
    when running from an uninstalled tree."""
    try:
        return version("vmresize")
    except PackageNotFoundError:
        return "0.0.0+unknown"
