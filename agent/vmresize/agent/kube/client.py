"""The agent's only use of the Kubernetes API client: its Host and its HostTasks' status.

Writes are status-only merge patches, so they never touch what others own: the admin's
``Host.spec`` (created once with defaults, never overwritten, so ``enabled: false``
survives agent restarts), the operator's ``Host.status.allocations`` and the immutable
``HostTask.spec``. API errors are classified by :func:`vmresize.api.apierrors.classify`
(the same call the operator makes) and translated here into
:class:`~vmresize.agent.errors.KubeError` subclasses whose ``retryable`` tells the caller
whether trying again can help.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from vmresize.agent.errors import (
    KubeAlreadyExistsError,
    KubeConflictError,
    KubeError,
    KubeNotFoundError,
    KubeRejectedError,
    KubeUnavailableError,
    TaskUnreadableError,
)
from vmresize.api.apierrors import ApiErrorKind, classify, status_reason
from vmresize.api.host import Host, HostSpec
from vmresize.api.hosttask import HostTask, TaskPhase, TaskProgress, TaskResult
from vmresize.api.meta import GROUP, VERSION
from vmresize.api.naming import WRITER_ANNOTATION, package_version

log = logging.getLogger(__name__)
T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
PROGRESS_MIN_INTERVAL = 1.0
"""At most one progress patch a second per task (the brief's bound on API write load)."""
REQUEST_TIMEOUT = 30.0
"""Bound on one API request: a hung API server connection must not hang a step."""


_KINDS: dict[ApiErrorKind, type[KubeError]] = {
    ApiErrorKind.NOT_FOUND: KubeNotFoundError,
    ApiErrorKind.CONFLICT: KubeConflictError,
    ApiErrorKind.ALREADY_EXISTS: KubeAlreadyExistsError,
    ApiErrorKind.UNAVAILABLE: KubeUnavailableError,
    ApiErrorKind.REJECTED: KubeRejectedError,
}


def translate(e: Exception, context: str) -> KubeError:
    """Map a Kubernetes client or transport error to our tree (caller does ``raise ... from``).

    An error below HTTP (urllib3, a socket) never got an answer: ``KubeUnavailableError``.
    """
    if isinstance(e, ApiException):
        status = e.status or None
        msg = f"{context}: HTTP {status} {e.reason}"
        kind = classify(status, status_reason(e.body))
        return _KINDS[kind](msg, status=status)
    return KubeUnavailableError(f"{context}: {e}")


def unreadable(body: Mapping[str, Any], error: ValidationError, agent: str) -> TaskUnreadableError:
    """Why this agent (version ``agent``) refuses a task it cannot parse: which fields, and
    the two versions when the operator that wrote it (its annotation) is another one."""
    meta = body.get("metadata") or {}
    writer = (meta.get("annotations") or {}).get(WRITER_ANNOTATION)
    fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                       for e in error.errors()[:5])
    if writer and writer != agent:
        why = (f"version skew: this agent is vmresize {agent}, the operator that wrote the "
               f"task is vmresize {writer}; upgrade the agent")
    else:
        why = f"this agent is vmresize {agent}, the task's writer {writer or 'unknown'}"
    status = body.get("status") or {}
    return TaskUnreadableError(f"refused: this agent cannot read HostTask {meta.get('name')}: "
                          f"{fields} ({why})", phase=status.get("phase"))


def utcnow() -> datetime:
    """The current time in UTC, for the timestamps the agent writes."""
    return datetime.now(UTC)


class AgentKube:
    """Synchronous, typed access to exactly the objects the agent writes."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = client.CustomObjectsApi(api_client)

    @classmethod
    def from_kubeconfig(cls, path: Path | None) -> AgentKube:
        """In-cluster credentials, else ``path``, else the default kubeconfig."""
        try:
            if path is not None:
                return cls(config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=str(path)))
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            return cls(client.ApiClient())
        except (config.ConfigException, OSError) as e:
            raise KubeError(f"cannot load Kubernetes credentials: {e}") from e

    def _call(self, context: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise translate(e, context) from e

    # --- Host ---------------------------------------------------------------------------

    def get_host(self, name: str) -> Host:
        """The Host ``name``; KubeNotFoundError if it does not exist."""
        body = self._call(f"get Host {name}", lambda: self._api.get_cluster_custom_object(
            GROUP, VERSION, Host.plural, name, _request_timeout=REQUEST_TIMEOUT))
        return Host.from_body(body)

    def ensure_host(self, name: str, *, bandwidth_mibps: int | None = None) -> Host:
        """Get the Host, creating it with default spec if it does not exist (spec untouched
        otherwise); ``bandwidth_mibps``: the chart's default ``migrationBandwidthMiBps``,
        written only when the Host is created (an admin's later change is theirs)."""
        try:
            return self.get_host(name)
        except KubeNotFoundError:
            pass
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": Host.kind_name,
                "metadata": {"name": name},
                "spec": HostSpec(migration_bandwidth_mibps=bandwidth_mibps).wire()}
        try:
            created = self._call(f"create Host {name}",
                                 lambda: self._api.create_cluster_custom_object(
                                     GROUP, VERSION, Host.plural, body,
                                     _request_timeout=REQUEST_TIMEOUT))
            log.info("registered new Host %s", name)
            return Host.from_body(created)
        except KubeAlreadyExistsError:  # created meanwhile by someone else: theirs wins
            return self.get_host(name)

    def patch_host_status(self, name: str, status: dict[str, Any]) -> None:
        """Merge-patch ``status`` into the Host's status subresource."""
        self._call(f"patch Host {name} status",
                   lambda: self._api.patch_cluster_custom_object_status(
                       GROUP, VERSION, Host.plural, name, {"status": status},
                       _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT))

    # --- HostTask -----------------------------------------------------------------------

    def get_task(self, namespace: str, name: str) -> HostTask:
        """The HostTask ``namespace/name``; KubeNotFoundError if it does not exist,
        TaskUnreadableError if this agent's model cannot read it (see :func:`unreadable`)."""
        body = self._call(f"get HostTask {namespace}/{name}",
                          lambda: self._api.get_namespaced_custom_object(
                              GROUP, VERSION, namespace, HostTask.plural, name,
                              _request_timeout=REQUEST_TIMEOUT))
        try:
            return HostTask.from_body(body)
        except ValidationError as e:
            raise unreadable(body if isinstance(body, Mapping) else {}, e,
                             package_version()) from e

    def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """A namespaced vmresize.io object as the API returns it (the fence reads owners)."""
        body: object = self._call(
            f"get {plural} {namespace}/{name}",
            lambda: self._api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT))
        if not isinstance(body, dict):
            raise KubeError(f"get {plural} {namespace}/{name}: not an object")
        return body

    def patch_task_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch ``status`` into the HostTask's status subresource."""
        self._call(f"patch HostTask {namespace}/{name} status",
                   lambda: self._api.patch_namespaced_custom_object_status(
                       GROUP, VERSION, namespace, HostTask.plural, name, {"status": status},
                       _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT))


class TaskStatusWriter:
    """Reports one attempt of one HostTask: Running, progress (≤ 1/s), then the outcome."""

    def __init__(self, kube: AgentKube, namespace: str, name: str, *,
                 min_interval: float = PROGRESS_MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self._min_interval, self._clock = min_interval, clock
        self._last = float("-inf")
        self._pending: TaskProgress | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.limit_bytes_per_second = 0  # the task's bandwidth limit, reported with progress

    async def _patch(self, status: dict[str, Any]) -> None:
        await asyncio.to_thread(self.kube.patch_task_status, self.namespace, self.name, status)

    async def running(self, attempt: int, message: str = "") -> None:
        """Mark the task Running for ``attempt``: start time set, finish time, message and progress
        reset."""
        now = utcnow().isoformat()
        await self._patch({"phase": TaskPhase.RUNNING.value, "attempt": attempt,
                           "startedAt": now, "heartbeat": now, "finishedAt": None,
                           "message": message, "progress": TaskProgress().wire()})

    async def beat_forever(self, interval: float) -> None:
        """Keep ``status.heartbeat`` fresh while the step runs (cancel to stop). A frozen
        agent stops beating, which is how the operator tells it from a slow step."""
        while True:
            await asyncio.sleep(interval)
            await self.beat()

    async def beat(self) -> None:
        """One heartbeat; a failed one is logged (the next may get through)."""
        try:
            await self._patch({"heartbeat": utcnow().isoformat()})
        except KubeError as e:
            log.warning("heartbeat of %s/%s failed: %s", self.namespace, self.name, e)

    def progress(self, done: int, total: int, rate: float) -> None:
        """Progress callback (called on the event loop); patches at a bounded rate."""
        self._pending = TaskProgress(bytes_done=done, bytes_total=total,
                                     rate_bytes_per_second=int(rate),
                                     limit_bytes_per_second=self.limit_bytes_per_second)
        now = self._clock()
        if now - self._last < self._min_interval or (
                self._inflight is not None and not self._inflight.done()):
            return
        self._last = now
        self._inflight = asyncio.get_running_loop().create_task(self._flush_progress())

    async def _flush_progress(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            await self._patch({"progress": pending.wire()})
        except KubeError as e:  # progress is best effort; the outcome is not
            log.warning("progress update of %s/%s failed: %s", self.namespace, self.name, e)

    async def settle(self) -> None:
        """Wait for an in-flight progress patch."""
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)

    async def succeeded(self, result: TaskResult, message: str) -> None:
        """After any in-flight progress patch, mark the task Succeeded with ``result`` and the last
        progress."""
        await self.settle()
        status: dict[str, Any] = {"phase": TaskPhase.SUCCEEDED.value, "message": message,
                                  "retryable": True, "result": result.wire(),
                                  "finishedAt": utcnow().isoformat()}
        if self._pending is not None:
            status["progress"] = self._pending.wire()
        await self._patch(status)

    async def failed(self, message: str, *, retryable: bool) -> None:
        """After any in-flight progress patch, mark the task Failed with ``message`` and whether a
        retry can help."""
        await self.settle()
        await self._patch({"phase": TaskPhase.FAILED.value, "message": message,
                           "retryable": retryable, "finishedAt": utcnow().isoformat()})
