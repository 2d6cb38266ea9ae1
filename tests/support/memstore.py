"""An in-memory :class:`~vmresize.operator.persistence.storage.Storage` for unit tests.

Same methods and the same API-server semantics that the engine relies on: every object has
a UID and a resourceVersion; a status write with a stale resourceVersion is a 409
(:class:`ApiConflictError`); a create of an existing name is AlreadyExists (then the owner check of
the real storage); a write to a missing object is a 404. Every write is recorded, and a
hook runs before each one, so a test can inject a 409, a user's write, or a "crash" (an
exception that ends the step there) between any two writes.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from vmresize.api.flavor import Flavor
from vmresize.api.host import Host
from vmresize.api.hosttask import HostTask
from vmresize.api.instance import Instance
from vmresize.api.meta import Resource
from vmresize.api.quota import VMQuota
from vmresize.api.resize import VMResize
from vmresize.operator.decisions.scheduler import HostState
from vmresize.operator.errors import ApiConflictError, ApiNotFoundError
from vmresize.operator.persistence.hostview import WatchedHost, watched
from vmresize.operator.persistence.sightings import Sightings
from vmresize.operator.persistence.storage import check_same_task

R = TypeVar("R", bound=Resource)
Key = tuple[str, str, str]   # plural, namespace ("" for cluster objects), name


class MemStorage:
    """Objects as JSON bodies, the way the API server keeps them."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[str, Key]] = []
        self.before_write: Callable[[str, Key], None] = lambda what, key: None
        self._rv = itertools.count(1)
        self.created_tasks: list[HostTask] = []
        # What the real Storage remembers for the next writer (each taken once).
        self.recent: dict[Key, dict[str, Any]] = {}
        #: The operator's monotonic clock, moved by the test (``mono += seconds``).
        self.mono = 1000.0
        self.sightings = Sightings(lambda: self.mono)
        #: The API server's clock for ``metadata.creationTimestamp`` (None: not set).
        self.api_clock: Callable[[], datetime] | None = None

    # -- the test's own access

    def put(self, obj: Resource) -> None:
        """Create ``obj`` as a user or agent would (a fresh UID and resourceVersion)."""
        body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["kind"] = obj.kind_name
        body["metadata"] = {**body.get("metadata", {}), "uid": str(uuid.uuid4()),
                            "resourceVersion": str(next(self._rv))}
        if self.api_clock is not None:
            body["metadata"]["creationTimestamp"] = self.api_clock().isoformat()
        self.objects[self._key(obj)] = body

    def patch(self, plural: str, namespace: str, name: str,
              change: Callable[[dict[str, Any]], None]) -> None:
        """A write by someone else (user, agent): changes the resourceVersion."""
        body = self.objects[(plural, namespace, name)]
        change(body)
        body["metadata"]["resourceVersion"] = str(next(self._rv))

    def mark_deleted(self, plural: str, namespace: str, name: str) -> None:
        self.patch(plural, namespace, name, lambda b: b["metadata"].setdefault(
            "deletionTimestamp", datetime.now(UTC).isoformat()))

    def remove(self, plural: str, namespace: str, name: str) -> None:
        self.objects.pop((plural, namespace, name), None)

    def tasks(self) -> list[HostTask]:
        return [HostTask.from_body(copy.deepcopy(b)) for k, b in self.objects.items()
                if k[0] == HostTask.plural]

    @staticmethod
    def _key(obj: Resource) -> Key:
        ns = obj.namespace if obj.scope == "Namespaced" else ""
        return (obj.plural, ns, obj.name)

    def _get(self, model: type[R], name: str, namespace: str = "") -> R | None:
        body = self.objects.get((model.plural, namespace, name))
        return None if body is None else model.from_body(copy.deepcopy(body))

    def _write(self, what: str, key: Key) -> None:
        self.before_write(what, key)   # may raise: a 409, or the "crash" of the operator
        self.writes.append((what, key))

    # -- the Storage interface

    def flavor(self, name: str) -> Flavor | None:
        return self._get(Flavor, name)

    def host(self, name: str) -> Host | None:
        return self._get(Host, name)

    def instance(self, namespace: str, name: str) -> Instance | None:
        inst = self._get(Instance, name, namespace)
        if inst is not None:
            self.recent[(Instance.plural, namespace, name)] = inst.model_dump(
                mode="json", by_alias=True, exclude_none=True)
        return inst

    def resize(self, namespace: str, name: str) -> VMResize | None:
        self.recent.pop((VMResize.plural, namespace, name), None)
        return self._get(VMResize, name, namespace)

    def locked_instance(self, namespace: str, name: str, resize_uid: str) -> Instance | None:
        body = self.recent.get((Instance.plural, namespace, name))
        if body is None or (body.get("status") or {}).get("activeResizeUid") != resize_uid:
            return None
        return Instance.from_body(copy.deepcopy(body))

    def written_resize(self, namespace: str, name: str) -> VMResize | None:
        body = self.recent.pop((VMResize.plural, namespace, name), None)
        return None if body is None else VMResize.from_body(body)

    def recent_instance(self, namespace: str, name: str) -> Instance | None:
        body = self.recent.pop((Instance.plural, namespace, name), None)
        return None if body is None else Instance.from_body(body)

    def task(self, namespace: str, name: str) -> HostTask | None:
        return self._get(HostTask, name, namespace)

    def tasks_of(self, namespace: str, owner_uid: str) -> list[HostTask]:
        """Every HostTask in ``namespace`` of the owner ``owner_uid`` (the real one lists by
        the owner-UID label; here by the spec, which the operator writes the same)."""
        return [t for t in self.tasks() if t.namespace == namespace
                and t.spec.owner_uid == owner_uid]

    def hosts(self) -> list[Host]:
        return [Host.from_body(copy.deepcopy(b)) for k, b in sorted(self.objects.items())
                if k[0] == Host.plural]

    def watched_hosts(self) -> list[WatchedHost]:
        """A view that never lags (the real one may, which only costs refused claims)."""
        return [watched(h, self.sightings) for h in self.hosts()]

    def clock(self) -> float:
        return self.mono

    def host_heard(self, name: str) -> float | None:
        h = self.host(name)
        return None if h is None else watched(h, self.sightings).state.heard

    def task_heard(self, task: HostTask) -> float:
        return self.sightings.see(("task", task.uid), task.resource_version)

    def host_states(self) -> tuple[HostState, ...]:
        return tuple(w.state for w in self.watched_hosts())

    def claim_holders(self, claim_key: str) -> list[str]:
        return [w.host.name for w in self.watched_hosts()
                if w.host.status and claim_key in w.host.status.allocations]

    def host_for_update(self, name: str) -> Host | None:
        """The view's copy (which may lag, in a test's subclass)."""
        return next((w.host.model_copy(deep=True) for w in self.watched_hosts()
                     if w.host.name == name), None)

    def resizes(self) -> list[VMResize]:
        return [VMResize.from_body(copy.deepcopy(b)) for k, b in sorted(self.objects.items())
                if k[0] == VMResize.plural]

    def quota(self, namespace: str, name: str) -> VMQuota | None:
        return self._get(VMQuota, name, namespace)

    def quotas(self, namespace: str | None) -> list[VMQuota]:
        return [VMQuota.from_body(copy.deepcopy(b)) for k, b in sorted(self.objects.items())
                if k[0] == VMQuota.plural and namespace in (None, k[1])]

    def instances(self) -> list[Instance]:
        return [Instance.from_body(copy.deepcopy(b)) for k, b in sorted(self.objects.items())
                if k[0] == Instance.plural]

    def replace_status(self, obj: R) -> R:
        key = self._key(obj)
        self._write("status", key)
        cur = self.objects.get(key)
        if cur is None:
            raise ApiNotFoundError(f"replace {key} status: HTTP 404")
        if cur["metadata"]["resourceVersion"] != obj.resource_version:
            raise ApiConflictError(f"replace {key} status: conflict")
        body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        cur["status"] = body.get("status")
        cur["metadata"]["resourceVersion"] = str(next(self._rv))
        if isinstance(obj, (VMResize, Instance)):
            self.recent[key] = copy.deepcopy(cur)
        return type(obj).from_body(copy.deepcopy(cur))

    def create_task(self, task: HostTask) -> None:
        key = self._key(task)
        self._write("create", key)
        if key in self.objects:
            check_same_task(self.task(task.namespace, task.name), task)
            return
        self.put(task)
        self.created_tasks.append(task)

    def delete_tasks(self, namespace: str, owner_uid: str) -> None:
        for t in self.tasks():
            if t.namespace == namespace and t.spec.owner_uid == owner_uid:
                self.remove(HostTask.plural, namespace, t.name)
