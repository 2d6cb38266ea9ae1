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

Fed by the watch thread (and by the operator's own Host writes, see
:meth:`HostView.put`), read by the worker threads that run the steps: a lock guards it.
Hosts are shared, never copied: readers must not change them (:meth:`HostView.copy` gives
one to change). Per decision the scheduler needs every Host's plain state and the holders
of one claim key: both are kept ready here (:meth:`HostView.states`, :meth:`HostView.holders`)
rather than rebuilt from 10,000 entries each time.

Each entry also carries when the operator saw its heartbeat change
(:mod:`.sightings`, on the operator's monotonic clock): the scheduler's ``Heartbeat``
filter and the Host ``Ready`` watchdog judge that, never the agent's stamp itself.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import ValidationError

from vmresize.api.host import Host
from vmresize.operator.decisions.scheduler import HostState
from vmresize.operator.decisions.views import host_state
from vmresize.operator.persistence.sightings import Sightings


class WatchedHost(NamedTuple):
    """One Host as last seen, and what the scheduler needs of it."""

    host: Host
    state: HostState


def watched(host: Host, sightings: Sightings) -> WatchedHost:
    """The view's entry for ``host``, its heartbeat noted in ``sightings`` (a Host that never
    beat has no sighting: it is stale)."""
    beat = host.status.heartbeat if host.status else None
    heard = None if beat is None else sightings.see(("host", host.name), beat)
    return WatchedHost(host, host_state(host, heard))


class HostView:
    """Hosts by name, as the watch last delivered them."""

    def __init__(self, sightings: Sightings | None = None) -> None:
        #: When each Host's heartbeat was seen to change (shared with the storage).
        self.sightings = sightings if sightings is not None else Sightings()
        #: Set once a full list has been taken in: until then readers list the API instead.
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._hosts: dict[str, WatchedHost] = {}
        self._order: list[str] | None = []   # names sorted; None after a Host came or went
        self._states: tuple[HostState, ...] | None = ()   # in name order; None after a change
        self._holders: dict[str, set[str]] = {}   # claim key -> names of the Hosts holding it

    def put(self, body: Mapping[str, Any]) -> WatchedHost | None:
        """Take a Host's body from a watch event, or from the answer to the operator's own
        write of it (the same version again costs nothing); the entry. A Host that does not
        parse leaves the view: nothing is scheduled on it.

        Versions are not compared: an event older than a write taken in just before may
        still arrive and briefly show the Host as it was (until the write's own event). That
        only makes the view lag, which is allowed (see above)."""
        meta = body.get("metadata") or {}
        name, version = str(meta.get("name", "")), str(meta.get("resourceVersion", ""))
        with self._lock:
            known = self._hosts.get(name)
        if known is not None and version and known.host.resource_version == version:
            return known
        try:
            entry = watched(Host.from_body(body), self.sightings)
        except ValidationError:
            self.remove(name)
            return None
        with self._lock:
            old = self._hosts.get(name)
            if old is None:
                self._order = None
            else:
                self._unindex(old)
            self._hosts[name] = entry
            self._states = None
            for k in entry.host.status.allocations if entry.host.status else ():
                self._holders.setdefault(k, set()).add(name)
        return entry

    def _unindex(self, entry: WatchedHost) -> None:
        name = entry.host.name
        for k in entry.host.status.allocations if entry.host.status else ():
            names = self._holders.get(k)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._holders[k]

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
        self.sightings.forget(("host", name))
        with self._lock:
            old = self._hosts.pop(name, None)
            if old is not None:
                self._unindex(old)
                self._order = None
                self._states = None

    def hosts(self) -> list[WatchedHost]:
        """Every Host now, in name order (a snapshot: later events do not change it)."""
        with self._lock:
            if self._order is None:
                self._order = sorted(self._hosts)
            return [self._hosts[n] for n in self._order]

    def entry(self, name: str) -> WatchedHost | None:
        """The entry of Host ``name`` as last seen, if any."""
        with self._lock:
            return self._hosts.get(name)

    def states(self) -> tuple[HostState, ...]:
        """Every Host's scheduler state, in name order; built once per change of the view."""
        with self._lock:
            if self._states is None:
                if self._order is None:
                    self._order = sorted(self._hosts)
                self._states = tuple(self._hosts[n].state for n in self._order)
            return self._states

    def holders(self, claim_key: str) -> list[str]:
        """The Hosts whose allocations hold ``claim_key``, as last seen (sorted)."""
        with self._lock:
            return sorted(self._holders.get(claim_key, ()))

    def copy(self, name: str) -> Host | None:
        """A copy of the Host ``name`` as last seen that the caller may change (for a write
        guarded by its resourceVersion), or None if the view has none."""
        with self._lock:
            entry = self._hosts.get(name)
        return None if entry is None else entry.host.model_copy(deep=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._hosts)
