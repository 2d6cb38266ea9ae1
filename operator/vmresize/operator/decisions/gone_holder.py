"""Where an instance runs once the VMResize holding it is gone without its rollback (pure).

A VMResize that disappears mid-flight (its finalizer removed by someone other than the
operator, which the chart's admission policy refuses but an admin can still force) leaves
its Instance locked, with ``status.host`` still the source. The lock sweep must not then
declare the instance Active there: the source may be powered off and held while the VM
runs on the destination (issue 18, finding 3). What the agents reported in the gone
resize's HostTasks (they outlive it: no ownerReference crosses namespaces) decides:

* no MigrateDisk was ever taken up by an agent: nothing powered the source off, and no
  Finish can have run; the VM is where the status says, and it is Active there;
* a RestoreSource succeeded on the source host, no Confirm was taken up, and any Finish
  that ran was undone by a CleanupDest that succeeded: the rollback completed before the
  resize went; Active (and running) on the source;
* anything else: nobody can tell from here which copy is the newest, or whether one runs
  at all. The instance goes to Error with the reason; the lock and the claims stay (no
  second resize, no scheduling onto the capacity the copies use) until an admin decides.

"Taken up" is any phase but Pending: agents fence destructive acts on the owner's status
(invariant 7), and a gone owner fences every task that has not acted yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vmresize.api.hosttask import HostTask, TaskAction, TaskPhase
from vmresize.api.instance import InstancePhase, PowerState

A = TaskAction


@dataclass(frozen=True)
class Verdict:
    """What the lock sweep writes into the Instance."""

    phase: InstancePhase
    power_state: PowerState | None   # None: leave the last known power state
    release_lock: bool
    message: str


def _phase(t: HostTask) -> TaskPhase:
    return t.status.phase if t.status is not None else TaskPhase.PENDING


def _taken_up(tasks: list[HostTask], action: TaskAction) -> list[HostTask]:
    return [t for t in tasks if t.spec.action is action and _phase(t) is not TaskPhase.PENDING]


def _succeeded(tasks: list[HostTask], action: TaskAction, host: str | None = None) -> bool:
    return any(t.spec.action is action and _phase(t) is TaskPhase.SUCCEEDED
               and host in (None, t.spec.host) for t in tasks)


def _facts(tasks: list[HostTask]) -> str:
    seen = sorted({f"{t.spec.action.value} on {t.spec.host} {_phase(t).value}"
                   for t in tasks if _phase(t) is not TaskPhase.PENDING})
    return "; ".join(seen) or "none taken up"


def after_gone_resize(resize: str, source_host: str | None,
                      tasks: Iterable[HostTask]) -> Verdict:
    """The instance's state once VMResize ``resize`` (its lock holder) is gone, from the
    HostTasks that resize owned; ``source_host`` is the instance's ``status.host``."""
    tasks = list(tasks)
    migrated = _taken_up(tasks, A.MIGRATE_DISK)
    finished = _taken_up(tasks, A.FINISH)
    if not migrated and not finished:
        return Verdict(InstancePhase.ACTIVE, None, True,
                       f"Released the lock of VMResize {resize}, which no longer exists; it "
                       f"never powered the instance off on {source_host}")
    restored = _succeeded(tasks, A.RESTORE_SOURCE, source_host)
    undone = not finished or _succeeded(tasks, A.CLEANUP_DEST)
    if restored and undone and not _taken_up(tasks, A.CONFIRM):
        return Verdict(InstancePhase.ACTIVE, PowerState.RUNNING, True,
                       f"Released the lock of VMResize {resize}, which no longer exists; its "
                       f"rollback had restarted the instance on {source_host}")
    return Verdict(
        InstancePhase.ERROR, PowerState.UNKNOWN, False,
        f"VMResize {resize} was removed before the operator rolled it back (its finalizer "
        f"was taken off), so where the instance runs is unknown: its steps ({_facts(tasks)}) "
        f"may have left it powered off on {source_host} and running elsewhere. The lock "
        "and the claims are kept. An admin must find the newest copy, remove the other, "
        "and then set this instance's status (host, phase, lock) by hand")
