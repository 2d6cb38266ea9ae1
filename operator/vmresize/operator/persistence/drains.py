"""What a HostDrain reads and writes in the API: itself, its Host's admin switch, its moves.

Beside :mod:`.storage`, whose client and error translation it shares (it imports no
Kubernetes client of its own), so that the drain's few calls stay out of the resize
path's storage. The drain's status is written guarded by
the resourceVersion it was read at; the Host's ``spec.enabled``/``disabledReason`` with a
merge patch (they are the admin's fields, and the drain acts for the admin); a VMResize is
created with the drain's labels, and one that exists already is fine only if it carries
this drain's UID.
"""

from __future__ import annotations

from typing import Any, cast

from vmresize.api.drain import DRAIN_LABEL, DRAIN_UID_LABEL, HostDrain
from vmresize.api.meta import API_VERSION, GROUP, VERSION
from vmresize.api.resize import VMResize
from vmresize.operator.decisions.drain import NewResize
from vmresize.operator.errors import ApiAlreadyExistsError, ApiNotFoundError, ForeignTaskError
from vmresize.operator.persistence.storage import REQUEST_TIMEOUT, Storage, _call


class DrainStore:
    """Typed access to HostDrains and to what they change."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._co = storage.custom_objects

    def drain(self, name: str) -> HostDrain | None:
        """The HostDrain ``name``, or None if it is gone."""
        try:
            return HostDrain.from_body(_call(
                f"get hostdrains/{name}", lambda: self._co.get_cluster_custom_object(
                    GROUP, VERSION, HostDrain.plural, name, _request_timeout=REQUEST_TIMEOUT)))
        except ApiNotFoundError:
            return None

    def resizes(self, drain_uid: str) -> list[VMResize]:
        """Every VMResize labelled with the drain's UID, in every namespace."""
        body = cast(dict[str, Any], _call(
            f"list vmresizes of drain {drain_uid}", lambda: self._co.list_cluster_custom_object(
                GROUP, VERSION, VMResize.plural,
                label_selector=f"{DRAIN_UID_LABEL}={drain_uid}",
                _request_timeout=REQUEST_TIMEOUT)))
        return [VMResize.from_body(i) for i in body.get("items", [])]

    def disable_host(self, host: str, reason: str) -> None:
        """Take ``host`` out of scheduling, saying why."""
        _call(f"disable hosts/{host}", lambda: self._co.patch_cluster_custom_object(
            GROUP, VERSION, "hosts", host,
            {"spec": {"enabled": False, "disabledReason": reason}},
            _request_timeout=REQUEST_TIMEOUT))

    def create_resize(self, d: HostDrain, new: NewResize) -> None:
        """Create the move ``new`` labelled with the drain; ForeignTaskError if a VMResize of
        that name exists without this drain's UID."""
        body = {"apiVersion": API_VERSION, "kind": VMResize.kind_name,
                "metadata": {"name": new.name, "namespace": new.namespace,
                             "labels": {DRAIN_UID_LABEL: d.uid, DRAIN_LABEL: d.name}},
                "spec": new.spec}
        try:
            _call(f"create vmresizes/{new.namespace}/{new.name}",
                  lambda: self._co.create_namespaced_custom_object(
                      GROUP, VERSION, new.namespace, VMResize.plural, body,
                      _request_timeout=REQUEST_TIMEOUT))
        except ApiAlreadyExistsError:
            there = self.storage.resize(new.namespace, new.name)
            if there is not None and there.metadata.get("labels", {}).get(
                    DRAIN_UID_LABEL) != d.uid:
                raise ForeignTaskError(f"VMResize {new.namespace}/{new.name} exists but is not "
                                  f"HostDrain {d.name}'s") from None

    def write_status(self, d: HostDrain) -> HostDrain:
        """Write ``d.status`` guarded by its resourceVersion (ApiConflictError if it moved)."""
        body = d.model_dump(mode="json", by_alias=True, exclude_none=True)
        out = _call(f"replace hostdrains/{d.name} status",
                    lambda: self._co.replace_cluster_custom_object_status(
                        GROUP, VERSION, HostDrain.plural, d.name, body,
                        _request_timeout=REQUEST_TIMEOUT))
        return HostDrain.from_body(out)
