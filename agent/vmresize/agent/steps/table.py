"""Which step carries out which HostTask action: the dispatch table, read in one place."""

from __future__ import annotations

from types import MappingProxyType

from vmresize.agent.steps import (
    delete,
    finish,
    health,
    migrate,
    prepare,
    restore,
    spawn,
)
from vmresize.agent.steps.context import Step
from vmresize.api.hosttask import TaskAction

STEPS: MappingProxyType[TaskAction, Step] = MappingProxyType({
    TaskAction.SPAWN: spawn.spawn,
    TaskAction.ADOPT: spawn.adopt,
    TaskAction.PREPARE: prepare.prepare,
    TaskAction.MIGRATE_DISK: migrate.migrate_disk,
    TaskAction.FINISH: finish.finish,
    TaskAction.CONFIRM: delete.delete_copy,
    TaskAction.CLEANUP_DEST: delete.delete_copy,
    TaskAction.DESTROY: delete.delete_copy,
    TaskAction.RESTORE_SOURCE: restore.restore_source,
    TaskAction.HEALTH_CHECK: health.health_check,
})
"""Every action has its step (a test checks the table against :class:`TaskAction`)."""
