"""The storage layer: the only module that talks to the Kubernetes API.

It reads and writes the vmresize custom resources as pydantic models, guards every status
write with the resourceVersion it read (optimistic concurrency), and converts client
exceptions into :mod:`vmresize.operator.errors` by the classification it shares with the
agent (:func:`vmresize.api.apierrors.classify`).

It also remembers what it last read or wrote of some objects, for the writer that comes
next (:meth:`Storage.written_resize`, :meth:`Storage.recent_instance`,
:meth:`Storage.host_for_update`): a request saved per use. Such a copy may be outdated,
so it may only start a write guarded by its resourceVersion (a 409 then sends the writer
to a fresh read), or be checked against one; never decide alone.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from vmresize.api.apierrors import ApiErrorKind, classify, status_reason
from vmresize.api.flavor import Flavor
from vmresize.api.host import Host
from vmresize.api.hosttask import HostTask
from vmresize.api.instance import Instance
from vmresize.api.meta import GROUP, VERSION, Resource
from vmresize.api.naming import OWNER_UID_LABEL, WRITER_ANNOTATION, package_version
from vmresize.api.quota import VMQuota
from vmresize.api.resize import VMResize
from vmresize.operator.decisions.scheduler import HostState
from vmresize.operator.errors import (
    ApiAlreadyExistsError,
    ApiConflictError,
    ApiNotFoundError,
    ApiRejectedError,
    ApiUnavailableError,
    ForeignTaskError,
    OperatorError,
)
from vmresize.operator.persistence.hostview import HostView, WatchedHost, watched
from vmresize.operator.persistence.sightings import Sightings

R = TypeVar("R", bound=Resource)
T = TypeVar("T")

#: Seconds for one API call; the API server is local or in-cluster.
REQUEST_TIMEOUT = 30
#: Seconds one Host watch request lasts before the server ends it (it is resumed).
WATCH_SECONDS = 300
#: Objects remembered for the next writer (each is taken at most once).
RECENT = 1024
log = logging.getLogger(__name__)


_KINDS: dict[ApiErrorKind, Callable[[str], OperatorError]] = {
    ApiErrorKind.NOT_FOUND: ApiNotFoundError,
    ApiErrorKind.CONFLICT: ApiConflictError,
    ApiErrorKind.ALREADY_EXISTS: ApiAlreadyExistsError,
    ApiErrorKind.UNAVAILABLE: ApiUnavailableError,
    ApiErrorKind.REJECTED: ApiRejectedError,
}


def _call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiException as e:
        kind = classify(e.status, status_reason(e.body))
        raise _KINDS[kind](f"{what}: HTTP {e.status or 'no status'}: {e.reason}") from e
    except (HTTPError, OSError) as e:  # below HTTP: no answer at all
        raise ApiUnavailableError(f"{what}: {e}") from e


class Recent:
    """The last copy of some objects, each taken at most once; the oldest are dropped.

    A cache wrapped around the engine's beats, never part of a decision: it saves the GET
    that a guarded write would otherwise start from (the resize a step wrote, for the next
    step; the Instance last read or written, for the lock and the Instance's updates). A
    copy that is outdated costs a 409 and a fresh read, never a wrong write."""

    def __init__(self, size: int = RECENT) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def put(self, key: tuple[str, str], value: Any) -> None:
        """Keep ``value`` as the last copy under ``key`` (dropping the oldest beyond size)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def peek(self, key: tuple[str, str]) -> Any:
        """The last copy under ``key`` (``None`` if none), kept for later."""
        with self._lock:
            return self._items.get(key)

    def take(self, key: tuple[str, str]) -> Any:
        """The last copy under ``key`` (``None`` if none), removed: used at most once."""
        with self._lock:
            return self._items.pop(key, None)


class Storage:
    """Typed access to Flavors, Hosts, Instances, VMResizes and HostTasks."""

    def __init__(self, api: client.ApiClient | None = None, view: HostView | None = None,
                 ) -> None:
        #: The watch-fed Hosts (the operator's handlers feed it); None: list them each time.
        self.view = view
        #: When the operator saw each heartbeat and task change (:mod:`.sightings`): the
        #: view's, so that the Host watch and the steps note them in one place.
        self.sightings = view.sightings if view is not None else Sightings()
        if api is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            conf = client.Configuration.get_default_copy()
            conf.connection_pool_maxsize = 64
            api = client.ApiClient(conf)
        self._co = client.CustomObjectsApi(api)
        self._written = Recent()     # VMResizes as this process last wrote them
        self._instances = Recent()   # Instances as last read or written

    @property
    def custom_objects(self) -> client.CustomObjectsApi:
        """The client, for the persistence layer's other stores (:mod:`.drains`): they
        call it through :func:`_call`, so its errors are translated here too."""
        return self._co

    # -- reads

    def _get(self, model: type[R], name: str, namespace: str | None = None) -> R | None:
        body = self._body(model, name, namespace)
        return None if body is None else model.from_body(body)

    def _body(self, model: type[R], name: str, namespace: str | None = None) -> Any:
        what = f"get {model.plural}/{name}"

        def get() -> Any:
            if namespace is None:
                return self._co.get_cluster_custom_object(
                    GROUP, VERSION, model.plural, name, _request_timeout=REQUEST_TIMEOUT)
            return self._co.get_namespaced_custom_object(
                GROUP, VERSION, namespace, model.plural, name,
                _request_timeout=REQUEST_TIMEOUT)

        try:
            return _call(what, get)
        except ApiNotFoundError:
            return None

    def flavor(self, name: str) -> Flavor | None:
        """The Flavor ``name``, or None if it does not exist."""
        return self._get(Flavor, name)

    def host(self, name: str) -> Host | None:
        """The Host ``name``, or None if it does not exist."""
        return self._get(Host, name)

    def instance(self, namespace: str, name: str) -> Instance | None:
        """The Instance ``namespace/name``, or None if it does not exist."""
        body = self._body(Instance, name, namespace)
        if body is None:
            return None
        self._instances.put((namespace, name), body)   # bodies are never changed here
        return Instance.from_body(body)

    def recent_instance(self, namespace: str, name: str) -> Instance | None:
        """The Instance as this process last read or wrote it (once), if remembered: only
        to start a guarded write of it. Saves the GET before each Instance write of a
        resize's effects (the lock, the Instance's updates) that follows a read or a write."""
        body = self._instances.take((namespace, name))
        return None if body is None else Instance.from_body(body)

    def locked_instance(self, namespace: str, name: str, resize_uid: str) -> Instance | None:
        """The Instance as this process last read or wrote it, if that copy shows the lock
        of ``resize_uid`` (kept for the next use): only the holder's own steps release it
        (the lock sweep only a gone holder's), so a copy that shows it is as good as a read.
        Saves Scheduling's GET of the Instance after Pending took the lock."""
        body = self._instances.peek((namespace, name))
        if body is None or ((body.get("status") or {}).get("activeResizeUid") != resize_uid):
            return None
        return Instance.from_body(body)

    def written_resize(self, namespace: str, name: str) -> VMResize | None:
        """The VMResize as this process last wrote it (once), if that was its last read or
        write here: the next step may start from it instead of a read, since its write is
        guarded by this version and a step that writes nothing checks it (engine). Saves
        the GET of the resize at the start of each step that follows a step that wrote."""
        body = self._written.take((namespace, name))
        return None if body is None else VMResize.from_body(body)

    def resize(self, namespace: str, name: str) -> VMResize | None:
        """The VMResize ``namespace/name``, or None if it does not exist."""
        self._written.take((namespace, name))   # this read is newer than our last write
        return self._get(VMResize, name, namespace)

    def task(self, namespace: str, name: str) -> HostTask | None:
        """The HostTask ``namespace/name``, or None if it does not exist."""
        return self._get(HostTask, name, namespace)

    def tasks_of(self, namespace: str, owner_uid: str) -> list[HostTask]:
        """Every HostTask in ``namespace`` of the owner with UID ``owner_uid`` (by label)."""
        body = cast(dict[str, Any], _call(
            f"list hosttasks of {owner_uid}", lambda: self._co.list_namespaced_custom_object(
                GROUP, VERSION, namespace, HostTask.plural,
                label_selector=f"{OWNER_UID_LABEL}={owner_uid}",
                _request_timeout=REQUEST_TIMEOUT)))
        return [HostTask.from_body(item) for item in body.get("items", [])]

    def hosts(self) -> list[Host]:
        """Every Host in the cluster."""
        body = cast(dict[str, Any], _call("list hosts", lambda: self._co.list_cluster_custom_object(
            GROUP, VERSION, Host.plural, _request_timeout=REQUEST_TIMEOUT)))
        return [Host.from_body(item) for item in body.get("items", [])]

    def watched_hosts(self) -> list[WatchedHost]:
        """Every Host as the operator's watch last saw it (:mod:`.hostview`; a list from the
        API server without a view, or before its first list). For decisions only: claims
        re-read their Host."""
        if self.view is None or not self.view.ready.is_set():
            return [watched(h, self.sightings) for h in self.hosts()]
        return self.view.hosts()

    def clock(self) -> float:
        """The operator's monotonic clock now: what the sightings are on."""
        return self.sightings.clock()

    def host_heard(self, name: str) -> float | None:
        """When the operator saw Host ``name``'s heartbeat change (the view's entry, else
        one read noted now); None for a Host that is gone or never beat."""
        if self.view is not None and self.view.ready.is_set():
            entry = self.view.entry(name)
            return None if entry is None else entry.state.heard
        h = self.host(name)
        return None if h is None else watched(h, self.sightings).state.heard

    def task_heard(self, task: HostTask) -> float:
        """When the operator saw ``task`` change (its resourceVersion: every write of its
        agent; the operator never writes a task after creating it), noted now."""
        return self.sightings.see(("task", task.uid), task.resource_version)

    def host_states(self) -> tuple[HostState, ...]:
        """Every Host's scheduler state, from the view (one list without it)."""
        if self.view is None or not self.view.ready.is_set():
            return tuple(w.state for w in self.watched_hosts())
        return self.view.states()

    def claim_holders(self, claim_key: str) -> list[str]:
        """The Hosts holding ``claim_key`` as the view last saw them (one list without it):
        a lagging view may miss a claim just made, or show one just released."""
        if self.view is None or not self.view.ready.is_set():
            return [w.host.name for w in self.watched_hosts()
                    if w.host.status and claim_key in w.host.status.allocations]
        return self.view.holders(claim_key)

    def host_for_update(self, name: str) -> Host | None:
        """The view's copy of Host ``name`` (the caller may change it), to start a write
        guarded by its resourceVersion; None without one."""
        if self.view is None or not self.view.ready.is_set():
            return None
        return self.view.copy(name)

    def watch_hosts(self, view: HostView, changed: Callable[[str, WatchedHost | None], None],
                    stop: threading.Event) -> None:
        """Keep ``view`` equal to the API server's Hosts until ``stop`` is set: one list,
        then a watch from its resourceVersion, resumed from the last one seen when the
        server ends it, listed again only when that is too old (410) or after an error.
        ``changed(name, entry)`` follows every change (None: the Host is gone). Blocks: the
        operator runs it in a thread."""
        version = ""
        while not stop.is_set():
            try:
                if not version:
                    body = cast(dict[str, Any], self._co.list_cluster_custom_object(
                        GROUP, VERSION, Host.plural, _request_timeout=REQUEST_TIMEOUT))
                    for name in view.replace(body.get("items", [])):
                        changed(name, None)
                    for h in view.hosts():
                        changed(h.host.name, h)
                    version = str(body["metadata"]["resourceVersion"])
                w = watch.Watch()  # type: ignore[no-untyped-call]
                events = w.stream(  # type: ignore[no-untyped-call]
                    self._co.list_cluster_custom_object, GROUP, VERSION, Host.plural,
                    resource_version=version, allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _request_timeout=WATCH_SECONDS + REQUEST_TIMEOUT)
                for ev in events:
                    kind, obj = ev["type"], ev["object"]
                    if kind == "ERROR":   # 410 Gone, as an event: list again
                        version = ""
                        break
                    meta = obj.get("metadata") or {}
                    version = str(meta.get("resourceVersion") or version)
                    if kind == "DELETED":
                        view.remove(str(meta.get("name", "")))
                        changed(str(meta.get("name", "")), None)
                    elif kind in ("ADDED", "MODIFIED"):
                        changed(str(meta.get("name", "")), view.put(obj))
                    if stop.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
            except ApiException as e:
                version = "" if e.status == 410 else version
                log.warning("Host watch: HTTP %s %s; watching again", e.status, e.reason)
                stop.wait(1.0)
            except (HTTPError, OSError, ValueError) as e:
                log.warning("Host watch: %s; watching again", e)
                stop.wait(1.0)

    def resizes(self) -> list[VMResize]:
        """Every VMResize in every namespace (the claim sweep's one read of their holders)."""
        body = cast(dict[str, Any], _call("list vmresizes",
                                          lambda: self._co.list_cluster_custom_object(
                                              GROUP, VERSION, VMResize.plural,
                                              _request_timeout=REQUEST_TIMEOUT)))
        return [VMResize.from_body(item) for item in body.get("items", [])]

    def quota(self, namespace: str, name: str) -> VMQuota | None:
        """The VMQuota ``namespace/name``, or None if it does not exist."""
        return self._get(VMQuota, name, namespace)

    def quotas(self, namespace: str | None) -> list[VMQuota]:
        """The VMQuotas of ``namespace`` (usually none or one); None: of every namespace."""
        def list_() -> object:
            if namespace is None:
                return self._co.list_cluster_custom_object(
                    GROUP, VERSION, VMQuota.plural, _request_timeout=REQUEST_TIMEOUT)
            return self._co.list_namespaced_custom_object(
                GROUP, VERSION, namespace, VMQuota.plural, _request_timeout=REQUEST_TIMEOUT)

        body = cast(dict[str, Any], _call(f"list vmquotas in {namespace or 'all'}", list_))
        return [VMQuota.from_body(item) for item in body.get("items", [])]

    def instances(self) -> list[Instance]:
        """Every Instance in every namespace (the adopt check needs them all)."""
        body = cast(dict[str, Any], _call("list instances",
                                          lambda: self._co.list_cluster_custom_object(
                                              GROUP, VERSION, Instance.plural,
                                              _request_timeout=REQUEST_TIMEOUT)))
        return [Instance.from_body(item) for item in body.get("items", [])]

    # -- writes

    def replace_status(self, obj: R) -> R:
        """Write ``obj.status`` guarded by ``obj``'s resourceVersion; ApiConflictError if it
        moved."""
        body: dict[str, Any] = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        what = f"replace {obj.plural}/{obj.name} status"
        if obj.scope == "Cluster":
            out = _call(what, lambda: self._co.replace_cluster_custom_object_status(
                GROUP, VERSION, obj.plural, obj.name, body, _request_timeout=REQUEST_TIMEOUT))
        else:
            out = _call(what, lambda: self._co.replace_namespaced_custom_object_status(
                GROUP, VERSION, obj.namespace, obj.plural, obj.name, body,
                _request_timeout=REQUEST_TIMEOUT))
        if isinstance(obj, Host) and self.view is not None and self.view.ready.is_set():
            # Our own write is in the view at once, before its watch event.
            self.view.put(cast(dict[str, Any], out))
        elif isinstance(obj, VMResize):
            self._written.put((obj.namespace, obj.name), out)
        elif isinstance(obj, Instance):
            self._instances.put((obj.namespace, obj.name), out)
        return type(obj).from_body(out)

    def create_task(self, task: HostTask) -> None:
        """Create a HostTask; one that exists already is fine only if it is this very task
        (same owner UID, action and host), else :class:`ForeignTaskError`."""
        body = task.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["kind"] = HostTask.kind_name
        meta = body.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}),
                               WRITER_ANNOTATION: package_version()}
        try:
            _call(f"create hosttasks/{task.name}", lambda: self._co.create_namespaced_custom_object(
                GROUP, VERSION, task.namespace, HostTask.plural, body,
                _request_timeout=REQUEST_TIMEOUT))
        except ApiAlreadyExistsError:
            check_same_task(self.task(task.namespace, task.name), task)

    def delete_tasks(self, namespace: str, owner_uid: str) -> None:
        """Delete every HostTask of one owner, once the owner itself is going away.

        Tasks live in the operator's namespace, so no ownerReference can collect them.
        """
        _call(f"delete hosttasks of {owner_uid}",
              lambda: self._co.delete_collection_namespaced_custom_object(
                  GROUP, VERSION, namespace, HostTask.plural,
                  label_selector=f"{OWNER_UID_LABEL}={owner_uid}",
                  _request_timeout=REQUEST_TIMEOUT))


def check_same_task(existing: HostTask | None, wanted: HostTask) -> None:
    """After AlreadyExists: the task there must be ``wanted`` (its owner, action, host)."""
    if existing is None:
        return   # deleted in between: the next step sees it missing and creates it again
    e, w = existing.spec, wanted.spec
    if (e.owner_uid, e.action, e.host) != (w.owner_uid, w.action, w.host):
        raise ForeignTaskError(f"HostTask {wanted.name} exists but is not ours: owner "
                          f"{e.owner} ({e.owner_uid}), {e.action} on {e.host}; wanted "
                          f"{w.owner} ({w.owner_uid}), {w.action} on {w.host}")
