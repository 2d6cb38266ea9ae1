"""kopf wiring of the agent: which HostTasks it handles, and running one attempt of one.

The agent has its own kopf identity (finalizer ``agent.vmresize.io/finalizer``, progress
annotations under ``agent.vmresize.io``, no peering), so it never fights the operator over
annotations. It handles only HostTasks labelled ``vmresize.io/host=<this host>`` in the
task namespace. A step runs when its phase is Pending, or Running from an attempt that is
dead — which after an agent restart is every Running task of this host, since only this
agent runs them: the restarted agent resumes it with ``attempt + 1``.

A resize's steps on this host run one at a time, and only while the owner still names
them: a step the operator has given up on (its step watchdog saw this agent, or its peer,
silent: frozen, then woken by SIGCONT) is not started, and a running one is cancelled at
its next heartbeat, ending Failed ("superseded"), before the owner's next step here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import kopf

from vmresize.agent import metrics
from vmresize.agent.errors import KubeError, KubeNotFoundError, StepError, TaskUnreadableError
from vmresize.agent.executor import Executor, StepOutcome
from vmresize.agent.kube.client import AgentKube, TaskStatusWriter
from vmresize.agent.kube.fence import INSTANCE_ACTIONS
from vmresize.api import naming
from vmresize.api.hosttask import HostTask, TaskPhase
from vmresize.api.meta import GROUP, VERSION

log = logging.getLogger(__name__)

FINALIZER = "agent.vmresize.io/finalizer"
ANNOTATION_PREFIX = "agent.vmresize.io"
KUBE_RETRY_SECONDS = 2.0
TASK_HEARTBEAT_SECONDS = 5.0
"""How often a running step refreshes ``status.heartbeat`` (the operator's stale window
should be several of these)."""


class TaskRunner:
    """Runs the steps of this host's HostTasks, one attempt at a time per task."""

    def __init__(self, *, host: str, executor: Executor, kube: AgentKube,
                 heartbeat_seconds: float = TASK_HEARTBEAT_SECONDS) -> None:
        self.host, self.executor, self.kube = host, executor, kube
        self.heartbeat_seconds = heartbeat_seconds
        self._running: set[tuple[str, str]] = set()
        self._owners: dict[str, tuple[asyncio.Lock, int]] = {}   # lock, steps using it

    async def handle(self, namespace: str, name: str, seen: HostTask | None = None) -> None:
        """Run the task if it is due (see the module docstring); a no-op otherwise.
        ``seen``: the task as kopf handed it over (its spec is immutable; its status may be
        old, so the task is read again all the same)."""
        key = (namespace, name)
        if key in self._running:
            return
        self._running.add(key)
        try:
            if seen is not None and seen.spec.host == self.host \
                    and seen.spec.action not in INSTANCE_ACTIONS:
                await self._handle_step(namespace, name, seen)
            else:
                await self._handle(namespace, name)
        finally:
            self._running.discard(key)

    async def _refuse_unreadable(self, namespace: str, name: str, e: TaskUnreadableError) -> None:
        """End a task this agent cannot read Failed at once, saying why (a retry would read
        it the same way, and its owner would wait for it: issue 18, finding 7)."""
        if e.phase in (TaskPhase.SUCCEEDED.value, TaskPhase.FAILED.value):
            return
        log.error("%s/%s: %s", namespace, name, e)
        await TaskStatusWriter(self.kube, namespace, name).failed(str(e), retryable=False)

    async def _handle(self, namespace: str, name: str) -> None:
        try:
            task = await asyncio.to_thread(self.kube.get_task, namespace, name)
        except KubeNotFoundError:
            return
        except TaskUnreadableError as e:
            await self._refuse_unreadable(namespace, name, e)
            return
        status = task.status
        if status is not None and status.phase in (TaskPhase.SUCCEEDED, TaskPhase.FAILED):
            return
        writer = TaskStatusWriter(self.kube, namespace, name)
        if task.spec.host != self.host:
            await writer.failed(f"refused: task is for host {task.spec.host!r}, this agent "
                                f"is {self.host!r}", retryable=False)
            return
        if task.spec.action in INSTANCE_ACTIONS:   # their own fences guard them
            await self._run(task, writer)
            return
        async with self._owner(task):   # after any older step of this resize here has ended
            why = await self._superseded(task)
            await self._run_unless(task, writer, why)

    async def _handle_step(self, namespace: str, name: str, seen: HostTask) -> None:
        """A resize step, its spec known from kopf: the fresh read of the task and the
        fence's read of its owner go out together (one round trip before the step starts,
        not two). The fence's answer counts only for the very task read (same UID)."""
        async with self._owner(seen):   # after any older step of this resize here has ended
            got, why = await asyncio.gather(
                asyncio.to_thread(self.kube.get_task, namespace, name),
                self._superseded(seen), return_exceptions=True)
            if isinstance(got, KubeNotFoundError):
                return
            if isinstance(got, TaskUnreadableError):
                await self._refuse_unreadable(namespace, name, got)
                return
            if isinstance(got, BaseException):
                raise got
            if isinstance(why, BaseException):
                raise why
            status = got.status
            if status is not None and status.phase in (TaskPhase.SUCCEEDED, TaskPhase.FAILED):
                return
            if got.uid != seen.uid or got.spec != seen.spec:   # another object by that name
                why = await self._superseded(got)
            await self._run_unless(got, TaskStatusWriter(self.kube, namespace, name), why)

    @contextlib.asynccontextmanager
    async def _owner(self, task: HostTask) -> AsyncIterator[None]:
        """Hold the lock of the task's owner: its steps here run one at a time."""
        owner = task.spec.owner_uid or task.name
        lock, users = self._owners.get(owner, (asyncio.Lock(), 0))
        self._owners[owner] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._owners[owner]
            if users > 1:
                self._owners[owner] = (lock, users - 1)
            else:
                del self._owners[owner]

    async def _run_unless(self, task: HostTask, writer: TaskStatusWriter,
                          why: str | None) -> None:
        """Run ``task``, or end it Failed if its owner no longer asks for it (``why``)."""
        if why is not None:
            log.warning("%s/%s superseded: %s", task.namespace, task.name, why)
            await writer.failed(f"superseded: {why}", retryable=False)
            return
        await self._run(task, writer)

    async def _superseded(self, task: HostTask) -> str | None:
        """Why the owner no longer asks for ``task`` (None: it does, or cannot tell now)."""
        try:
            return await self.executor.fence(task.spec, task.name)
        except StepError:
            return None   # unreadable owner: the destructive acts check again themselves

    async def _watch(self, task: HostTask, writer: TaskStatusWriter,
                     step: asyncio.Task[StepOutcome], why: list[str]) -> None:
        """Beat while ``step`` runs; cancel it once the owner names another task."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await writer.beat()
            if task.spec.action in INSTANCE_ACTIONS:
                continue
            reason = await self._superseded(task)
            if reason is not None:
                why.append(reason)
                step.cancel()
                return

    async def _run(self, task: HostTask, writer: TaskStatusWriter) -> None:
        namespace, name, status = task.namespace, task.name, task.status
        attempt = (status.attempt if status is not None else 0) + 1
        resumed = status is not None and status.phase == TaskPhase.RUNNING
        writer.limit_bytes_per_second = (task.spec.bandwidth_mibps or 0) * 1024 * 1024
        await writer.running(attempt, "resuming after an agent restart" if resumed else "")
        log.info("%s/%s: %s attempt %d", namespace, name, task.spec.action.value, attempt)
        superseded: list[str] = []
        tasks: list[asyncio.Task[Any]] = []
        try:
            with metrics.step(task.spec.action.value) as rec:
                step = asyncio.create_task(self.executor.run(
                    task.spec, task_name=name, progress=rec.progress(writer.progress)))
                tasks += [step, asyncio.create_task(self._watch(task, writer, step, superseded))]
                outcome = await step
        except asyncio.CancelledError:
            if not superseded:   # the agent itself is stopping
                raise
            log.warning("%s/%s cancelled, superseded: %s", namespace, name, superseded[0])
            await writer.failed(f"superseded while running: {superseded[0]}", retryable=False)
            return
        except StepError as e:
            log.warning("%s/%s failed (retryable=%s): %s", namespace, name, e.retryable, e)
            await writer.failed(str(e), retryable=e.retryable)
            return
        except Exception as e:  # a bug must still end the task, not leave it Running
            log.exception("%s/%s crashed", namespace, name)
            await writer.failed(f"agent error: {e!r}", retryable=True)
            return
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await writer.succeeded(outcome.result, outcome.message)
        log.info("%s/%s succeeded: %s", namespace, name, outcome.message)


def configure(settings: kopf.OperatorSettings) -> None:
    """The agent's kopf identity."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX)
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300


def build_registry(runner: TaskRunner) -> kopf.OperatorRegistry:
    """A registry with this host's HostTask handlers (the label filter needs the host name,
    known only at runtime, hence no module-level decorators)."""
    registry = kopf.OperatorRegistry()
    labels = {naming.HOST_LABEL: runner.host}

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount; elsewhere: $KUBECONFIG, read at call time (the
        # kubernetes client's own loader fixes its default path at import time).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    async def run(namespace: str | None, name: str | None, body: kopf.Body,
                  **_: Any) -> None:
        assert namespace is not None
        assert name is not None
        try:
            seen = HostTask.from_body(body)
        except ValueError:   # pydantic's ValidationError: read it fresh the ordinary way
            seen = None
        try:
            await runner.handle(namespace, name, seen)
        except KubeError as e:
            if e.retryable:
                raise kopf.TemporaryError(str(e), delay=KUBE_RETRY_SECONDS) from e
            raise kopf.PermanentError(str(e)) from e

    def unfinished(status: kopf.Status, **_: Any) -> bool:
        """Skip finished tasks without an API call (the runner re-reads the rest)."""
        return status.get("phase") not in {TaskPhase.SUCCEEDED.value, TaskPhase.FAILED.value}

    resource = (GROUP, VERSION, HostTask.plural)
    kopf.on.create(*resource, labels=labels, when=unfinished, registry=registry,
                   id="run")(run)
    kopf.on.resume(*resource, labels=labels, when=unfinished, registry=registry,
                   id="resume")(run)
    return registry
