"""The operator's watch-fed view of every Host, for scheduling decisions.

Listing every Host from the API server for each decision costs seconds at fleet scale
(1.4 s for 10,000 Hosts). Instead one list and then a watch of Hosts feed this view
(:meth:`~vmresize.operator.persistence.storage.Storage.watch_hosts`, a thread the operator
starts), and decisions read it: each Host parsed once per change, its
:class:`~vmresize.operator.decisions.scheduler.HostState` computed once per change too.
Not through kopf: its per-event machinery costs milliseconds, and the agents' heartbeats
of a 10,000-host fleet are hundreds of Host events a second.

The view may lag the API server by an event or two. That is safe because it is never the
authority: a claim re-reads its Host and writes guarded by that resourceVersion
(:mod:`vmresize.operator.persistence.claims`), so a stale view can only make a claim be
refused and chosen again, never over-commit a host. Whether a claim is held is likewise read
from the Host itself, not from here.

Fed by the watch thread, read by the worker threads that run the steps: a lock guards it.
Hosts are shared, never copied: readers must not change them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import ValidationError

from vmresize.api.host import Host
from vmresize.operator.decisions.scheduler import HostState
from vmresize.operator.decisions.views import host_state


class WatchedHost(NamedTuple):
    """One Host as last seen, and what the scheduler needs of it."""

    host: Host
    state: HostState


def watched(host: Host) -> WatchedHost:
    """The view's entry for ``host``."""
    return WatchedHost(host, host_state(host))


class HostView:
    """Hosts by name, as the watch last delivered them."""

    def __init__(self) -> None:
        #: Set once a full list has been taken in: until then readers list the API instead.
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._hosts: dict[str, WatchedHost] = {}
        self._order: list[str] | None = []   # names sorted; None after a Host came or went

    def put(self, body: Mapping[str, Any]) -> WatchedHost | None:
        """Take a Host's body from a watch event (the same version again costs nothing); the
        entry. A Host that does not parse leaves the view: nothing is scheduled on it."""
        meta = body.get("metadata") or {}
        name, version = str(meta.get("name", "")), str(meta.get("resourceVersion", ""))
        with self._lock:
            known = self._hosts.get(name)
        if known is not None and version and known.host.resource_version == version:
            return known
        try:
            entry = watched(Host.from_body(body))
        except ValidationError:
            self.remove(name)
            return None
        with self._lock:
            if name not in self._hosts:
                self._order = None
            self._hosts[name] = entry
        return entry

    def replace(self, bodies: list[Mapping[str, Any]]) -> list[str]:
        """Take in a full list (after a start or a lost watch): Hosts missing from it leave;
        the view is ready from now on. The names that left."""
        for body in bodies:
            self.put(body)
        listed = {str((b.get("metadata") or {}).get("name", "")) for b in bodies}
        with self._lock:
            gone = [n for n in self._hosts if n not in listed]
        for name in gone:
            self.remove(name)
        self.ready.set()
        return gone

    def remove(self, name: str) -> None:
        """Forget a deleted Host."""
        with self._lock:
            if self._hosts.pop(name, None) is not None:
                self._order = None

    def hosts(self) -> list[WatchedHost]:
        """Every Host now, in name order (a snapshot: later events do not change it)."""
        with self._lock:
            if self._order is None:
                self._order = sorted(self._hosts)
            return [self._hosts[n] for n in self._order]

    def __len__(self) -> int:
        with self._lock:
            return len(self._hosts)
