"""The operator's Host view follows the real API server: created, changed and deleted
Hosts, through one list and a watch (Storage.watch_hosts, the operator's host-watch thread).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import Any

from kubernetes import client
from tests.support.polling import wait_for

from vmresize.api.meta import API_VERSION, GROUP, VERSION
from vmresize.operator.persistence.hostview import HostView, WatchedHost
from vmresize.operator.persistence.storage import Storage


def _mem(view: HostView, name: str) -> int | None:
    entry = next((h for h in view.hosts() if h.host.name == name), None)
    return None if entry is None else entry.state.memory_mib


def test_the_view_follows_hosts_through_list_and_watch(api_client: Any) -> None:
    co = client.CustomObjectsApi(api_client)
    names = [f"hw-{uuid.uuid4().hex[:8]}-{i}" for i in range(2)]

    def make(name: str, mib: int) -> None:
        co.create_cluster_custom_object(GROUP, VERSION, "hosts", {
            "apiVersion": API_VERSION, "kind": "Host", "metadata": {"name": name},
            "spec": {"enabled": True}})
        co.patch_cluster_custom_object_status(GROUP, VERSION, "hosts", name, {"status": {
            "capacity": {"vcpus": 4, "memoryMiB": mib, "diskGiB": 10}}})

    make(names[0], 1000)   # before the watch starts: it comes with the first list
    view, stop = HostView(), threading.Event()
    seen: list[tuple[str, bool]] = []

    def changed(name: str, entry: WatchedHost | None) -> None:
        if name in names:
            seen.append((name, entry is not None))

    storage = Storage(api_client, view=view)
    t = threading.Thread(target=storage.watch_hosts, args=(view, changed, stop), daemon=True)
    t.start()
    try:
        wait_for(lambda: view.ready.is_set() and _mem(view, names[0]) == 1000, timeout=30,
                 what="the first list")
        assert [h.host.name for h in storage.watched_hosts()] == [
            h.host.name for h in view.hosts()], "decisions read the view once it is ready"
        make(names[1], 2000)
        wait_for(lambda: _mem(view, names[1]) == 2000, timeout=30, what="a created Host")
        co.patch_cluster_custom_object_status(GROUP, VERSION, "hosts", names[0], {
            "status": {"capacity": {"vcpus": 4, "memoryMiB": 3000, "diskGiB": 10}}})
        wait_for(lambda: _mem(view, names[0]) == 3000, timeout=30, what="a changed Host")
        co.delete_cluster_custom_object(GROUP, VERSION, "hosts", names[1])
        wait_for(lambda: _mem(view, names[1]) is None, timeout=30, what="a deleted Host")
        assert (names[1], False) in seen
    finally:
        stop.set()
        for n in names:
            with contextlib.suppress(client.ApiException):
                co.delete_cluster_custom_object(GROUP, VERSION, "hosts", n)
