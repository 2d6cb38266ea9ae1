"""The storage layer: the only module that talks to the Kubernetes API.

It reads and writes the vmresize custom resources as pydantic models, guards every status
write with the resourceVersion it read (optimistic concurrency), and converts client
exceptions into :mod:`vmresize.operator.errors` by the classification it shares with the
agent (:func:`vmresize.api.apierrors.classify`).
"""

from __future__ import annotations

import logging
import threading
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
from vmresize.api.naming import OWNER_UID_LABEL
from vmresize.api.resize import VMResize
from vmresize.operator.errors import (
    ApiAlreadyExists,
    ApiConflict,
    ApiNotFound,
    ApiRejected,
    ApiUnavailable,
    ForeignTask,
    OperatorError,
)
from vmresize.operator.persistence.hostview import HostView, WatchedHost, watched

R = TypeVar("R", bound=Resource)
T = TypeVar("T")

#: Seconds for one API call; the API server is local or in-cluster.
REQUEST_TIMEOUT = 30
#: Seconds one Host watch request lasts before the server ends it (it is resumed).
WATCH_SECONDS = 300
log = logging.getLogger(__name__)


_KINDS: dict[ApiErrorKind, Callable[[str], OperatorError]] = {
    ApiErrorKind.NOT_FOUND: ApiNotFound,
    ApiErrorKind.CONFLICT: ApiConflict,
    ApiErrorKind.ALREADY_EXISTS: ApiAlreadyExists,
    ApiErrorKind.UNAVAILABLE: ApiUnavailable,
    ApiErrorKind.REJECTED: ApiRejected,
}


def _call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiException as e:
        kind = classify(e.status, status_reason(e.body))
        raise _KINDS[kind](f"{what}: HTTP {e.status or 'no status'}: {e.reason}") from e
    except (HTTPError, OSError) as e:  # below HTTP: no answer at all
        raise ApiUnavailable(f"{what}: {e}") from e


class Storage:
    """Typed access to Flavors, Hosts, Instances, VMResizes and HostTasks."""

    def __init__(self, api: client.ApiClient | None = None, view: HostView | None = None,
                 ) -> None:
        #: The watch-fed Hosts (the operator's handlers feed it); None: list them each time.
        self.view = view
        if api is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            conf = client.Configuration.get_default_copy()
            conf.connection_pool_maxsize = 64
            api = client.ApiClient(conf)
        self._co = client.CustomObjectsApi(api)

    # -- reads

    def _get(self, model: type[R], name: str, namespace: str | None = None) -> R | None:
        what = f"get {model.plural}/{name}"

        def get() -> Any:
            if namespace is None:
                return self._co.get_cluster_custom_object(
                    GROUP, VERSION, model.plural, name, _request_timeout=REQUEST_TIMEOUT)
            return self._co.get_namespaced_custom_object(
                GROUP, VERSION, namespace, model.plural, name,
                _request_timeout=REQUEST_TIMEOUT)

        try:
            body = _call(what, get)
        except ApiNotFound:
            return None
        return model.from_body(body)

    def flavor(self, name: str) -> Flavor | None:
        """The Flavor ``name``, or None if it does not exist."""
        return self._get(Flavor, name)

    def host(self, name: str) -> Host | None:
        """The Host ``name``, or None if it does not exist."""
        return self._get(Host, name)

    def instance(self, namespace: str, name: str) -> Instance | None:
        """The Instance ``namespace/name``, or None if it does not exist."""
        return self._get(Instance, name, namespace)

    def resize(self, namespace: str, name: str) -> VMResize | None:
        """The VMResize ``namespace/name``, or None if it does not exist."""
        return self._get(VMResize, name, namespace)

    def task(self, namespace: str, name: str) -> HostTask | None:
        """The HostTask ``namespace/name``, or None if it does not exist."""
        return self._get(HostTask, name, namespace)

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
            return [watched(h) for h in self.hosts()]
        return self.view.hosts()

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

    def instances(self) -> list[Instance]:
        """Every Instance in every namespace (the adopt check needs them all)."""
        body = cast(dict[str, Any], _call("list instances",
                                          lambda: self._co.list_cluster_custom_object(
                                              GROUP, VERSION, Instance.plural,
                                              _request_timeout=REQUEST_TIMEOUT)))
        return [Instance.from_body(item) for item in body.get("items", [])]

    # -- writes

    def replace_status(self, obj: R) -> R:
        """Write ``obj.status`` guarded by ``obj``'s resourceVersion; ApiConflict if it moved."""
        body: dict[str, Any] = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        what = f"replace {obj.plural}/{obj.name} status"
        if obj.scope == "Cluster":
            out = _call(what, lambda: self._co.replace_cluster_custom_object_status(
                GROUP, VERSION, obj.plural, obj.name, body, _request_timeout=REQUEST_TIMEOUT))
        else:
            out = _call(what, lambda: self._co.replace_namespaced_custom_object_status(
                GROUP, VERSION, obj.namespace, obj.plural, obj.name, body,
                _request_timeout=REQUEST_TIMEOUT))
        return type(obj).from_body(out)

    def create_task(self, task: HostTask) -> None:
        """Create a HostTask; one that exists already is fine only if it is this very task
        (same owner UID, action and host), else :class:`ForeignTask`."""
        body = task.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["kind"] = HostTask.kind_name
        try:
            _call(f"create hosttasks/{task.name}", lambda: self._co.create_namespaced_custom_object(
                GROUP, VERSION, task.namespace, HostTask.plural, body,
                _request_timeout=REQUEST_TIMEOUT))
        except ApiAlreadyExists:
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
        raise ForeignTask(f"HostTask {wanted.name} exists but is not ours: owner "
                          f"{e.owner} ({e.owner_uid}), {e.action} on {e.host}; wanted "
                          f"{w.owner} ({w.owner_uid}), {w.action} on {w.host}")
