"""The agent's fence (invariant 7): does the owner still ask for this very task?

Before a destructive act the executor asks :class:`OwnerFence`. It reads the task's owner
from the API (``spec.owner`` = ``<namespace>/<name>``: a VMResize for the resize steps, an
Instance for Spawn, Adopt and Destroy) and lets the step proceed only if the owner is the
same object (``metadata.uid == spec.ownerUid``) and its ``status.currentTask`` names this
HostTask. The operator records that decision before it creates the task, so a task whose
decision was overtaken (a revert after an auto-confirm, a recreated namesake, a stale
attempt) is refused instead of destroying a copy.
"""

from __future__ import annotations

import asyncio

from vmresize.agent.errors import KubeError, KubeNotFoundError, StepError
from vmresize.agent.kube.client import AgentKube
from vmresize.api.hosttask import HostTaskSpec, TaskAction
from vmresize.api.instance import Instance
from vmresize.api.resize import VMResize

INSTANCE_ACTIONS = frozenset({TaskAction.SPAWN, TaskAction.ADOPT, TaskAction.DESTROY})


def owner_kind(action: TaskAction) -> tuple[str, str]:
    """(kind, plural) of the object that owns a task of ``action``."""
    if action in INSTANCE_ACTIONS:
        return Instance.kind_name, Instance.plural
    return VMResize.kind_name, VMResize.plural


class OwnerFence:
    """The :data:`vmresize.agent.executor.Fence` backed by the Kubernetes API."""

    def __init__(self, kube: AgentKube) -> None:
        self.kube = kube

    async def __call__(self, spec: HostTaskSpec, task_name: str) -> str | None:
        kind, plural = owner_kind(spec.action)
        namespace, _, name = spec.owner.partition("/")
        if not namespace or not name or "/" in name:
            return f"spec.owner {spec.owner!r} is not <namespace>/<name>"
        if not spec.owner_uid:
            return "the task names no owner UID"
        if not task_name:
            return "the task has no name"
        try:
            body = await asyncio.to_thread(self.kube.get_object, plural, namespace, name)
        except KubeNotFoundError:
            return f"{kind} {spec.owner} is gone"
        except KubeError as e:  # cannot tell: do nothing destructive now, try again later
            raise StepError(f"cannot read {kind} {spec.owner} to check the fence: {e}",
                            retryable=True) from e
        uid = (body.get("metadata") or {}).get("uid")
        if uid != spec.owner_uid:
            return f"{kind} {spec.owner} is another object now (uid {uid})"
        current = (body.get("status") or {}).get("currentTask")
        if current != task_name:
            return f"{kind} {spec.owner} names task {current!r}, not {task_name!r}"
        return None
