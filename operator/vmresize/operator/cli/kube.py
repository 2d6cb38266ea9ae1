"""The plugin's only door to the Kubernetes API (the ``kubernetes`` client).

Reads the vmresize objects as raw dicts (the caller parses them with the API models),
creates and merge-patches VMResizes, and follows one VMResize with a bounded watch. Every
client exception is turned into a :class:`PluginApiError` whose ``kind`` comes from
:func:`vmresize.api.apierrors.classify` (the classification the operator and agents use),
with the API server's own message kept verbatim so that a refusal reads as the server
wrote it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from vmresize.api.apierrors import ApiErrorKind, classify, status_reason
from vmresize.api.meta import GROUP, VERSION

#: Seconds for one plain request (connect, read); a watch gets its own read timeout.
REQUEST_TIMEOUT = (10, 30)
#: Longest single watch request; the loop opens a new one until the caller's deadline.
WATCH_CHUNK_SECONDS = 60


class PluginError(Exception):
    """Root of the plugin's own errors (it is a process of its own, beside the operator)."""


class PluginApiError(PluginError):
    """An API call failed: ``kind`` says how, ``message`` is the server's own words."""

    def __init__(self, kind: ApiErrorKind, status: int | None, message: str) -> None:
        super().__init__(message)
        self.kind, self.status, self.message = kind, status, message


class KubeconfigError(PluginError):
    """No usable kubeconfig (file, context) was found."""


def _server_message(e: ApiException) -> str:
    """The ``message`` of the Status body (what kubectl prints), else the HTTP reason."""
    try:
        doc = json.loads(e.body) if e.body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return f"HTTP {e.status}: {e.reason}"


def _obj(x: object) -> dict[str, Any]:
    """A JSON object the client returned (it types them ``object``)."""
    if not isinstance(x, dict):
        raise PluginApiError(ApiErrorKind.REJECTED, None, f"unexpected answer: {type(x).__name__}")
    return cast(dict[str, Any], x)


def _call(fn: Callable[[], object]) -> dict[str, Any]:
    try:
        return _obj(fn())
    except ApiException as e:
        raise PluginApiError(classify(e.status, status_reason(e.body)), e.status,
                        _server_message(e)) from e
    except (HTTPError, OSError) as e:  # below HTTP: no answer at all
        raise PluginApiError(ApiErrorKind.UNAVAILABLE, None, f"API server unreachable: {e}") from e

#: The cluster-scoped kinds: read without a namespace.
CLUSTER_KINDS = ("hosts", "flavors", "hostdrains")


class Kube:
    """The vmresize objects of one cluster, as seen from one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.co = client.CustomObjectsApi(api)
        self.namespace = namespace

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None,
                namespace: str | None) -> Kube:
        """Load a kubeconfig as kubectl does (``--kubeconfig``, else ``KUBECONFIG``, else
        ``~/.kube/config``); the namespace defaults to the context's, else ``default``."""
        try:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context)
            if namespace is None:
                contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig)
                chosen = next((c for c in contexts if c["name"] == context), active)
                namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        except (ConfigException, OSError) as e:
            raise KubeconfigError(f"kubeconfig: {e}") from e
        return cls(api, namespace)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        """One object; namespaced kinds are read from this namespace."""
        if plural in CLUSTER_KINDS:
            return _call(lambda: self.co.get_cluster_custom_object(
                GROUP, VERSION, plural, name, _request_timeout=REQUEST_TIMEOUT))
        return _call(lambda: self.co.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, _request_timeout=REQUEST_TIMEOUT))

    def list(self, plural: str, all_namespaces: bool = False) -> list[dict[str, Any]]:
        """Every object of a kind: cluster-wide kinds, this namespace, or all namespaces."""
        if plural in CLUSTER_KINDS or all_namespaces:
            out = _call(lambda: self.co.list_cluster_custom_object(
                GROUP, VERSION, plural, _request_timeout=REQUEST_TIMEOUT))
        else:
            out = _call(lambda: self.co.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, _request_timeout=REQUEST_TIMEOUT))
        return [dict(i) for i in out.get("items", [])]

    def create_resize(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a VMResize in this namespace; the server's answer (with its name)."""
        return _call(lambda: self.co.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "vmresizes", body,
            _request_timeout=REQUEST_TIMEOUT))

    def create_cluster(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a cluster-scoped object (a HostDrain); the server's answer."""
        return _call(lambda: self.co.create_cluster_custom_object(
            GROUP, VERSION, plural, body, _request_timeout=REQUEST_TIMEOUT))

    def patch_cluster_spec(self, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of a cluster-scoped object's ``spec``."""
        return _call(lambda: self.co.patch_cluster_custom_object(
            GROUP, VERSION, plural, name, {"spec": spec},
            _content_type="application/merge-patch+json", _request_timeout=REQUEST_TIMEOUT))

    def patch_resize_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of ``spec``, as ``kubectl patch --type merge`` sends it (the
        client's default content type for this call)."""
        return _call(lambda: self.co.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "vmresizes", name, {"spec": spec},
            _content_type="application/merge-patch+json", _request_timeout=REQUEST_TIMEOUT))

    def follow(self, name: str, deadline: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """``("CURRENT", body)`` of the VMResize ``name`` now, then ``(event type, body)``
        for each new version of it until ``deadline`` (``time.monotonic()``), from a watch
        (re-opened every :data:`WATCH_CHUNK_SECONDS`, re-read after a 410 Gone). Ends after
        a ``DELETED`` event."""
        obj = self.get("vmresizes", name)
        yield "CURRENT", obj
        rv = obj["metadata"]["resourceVersion"]
        while (left := deadline - time.monotonic()) > 0:
            w = watch.Watch()  # type: ignore[no-untyped-call]
            chunk = max(1, min(WATCH_CHUNK_SECONDS, int(left + 0.999)))
            try:
                for ev in w.stream(  # type: ignore[no-untyped-call]
                        self.co.list_namespaced_custom_object, GROUP, VERSION,
                        self.namespace, "vmresizes", field_selector=f"metadata.name={name}",
                        resource_version=rv, timeout_seconds=chunk,
                        _request_timeout=(10, chunk + 10)):
                    o = ev["object"]
                    rv = o["metadata"]["resourceVersion"]
                    yield str(ev["type"]), dict(o)
                    if ev["type"] == "DELETED" or time.monotonic() >= deadline:
                        return
            except ApiException as e:
                if e.status != 410:
                    raise PluginApiError(classify(e.status, status_reason(e.body)), e.status,
                                    _server_message(e)) from e
                obj = self.get("vmresizes", name)   # expired: read afresh, watch from there
                rv = obj["metadata"]["resourceVersion"]
                yield "CURRENT", obj
            except (HTTPError, OSError) as e:
                raise PluginApiError(ApiErrorKind.UNAVAILABLE, None,
                                f"API server unreachable: {e}") from e
            finally:
                w.stop()  # type: ignore[no-untyped-call]
