"""The operator's notes of when it saw each agent-refreshed value change (thread-safe).

Host heartbeats (fed by the Host watch, :mod:`.hostview`) and HostTask versions (fed by the
HostTask handler and by the steps' own reads) go through one :class:`Sightings`, whose
clock is the process's monotonic clock: what :mod:`vmresize.operator.decisions.liveness`
judges. Kept in memory only: after a restart every party is first seen anew (the grace
window described there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

from vmresize.operator.decisions.liveness import Sighting, sight

Key = tuple[str, str]   # ("host", name) or ("task", uid)


class Sightings:
    """When each value was last seen to change, on the operator's monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Key, Sighting] = {}

    def see(self, key: Key, value: Hashable) -> float:
        """Note ``value`` for ``key`` now; when it was first seen with that value."""
        now = self.clock()
        with self._lock:
            s = self._seen[key] = sight(self._seen.get(key), value, now)
        return s.at

    def at(self, key: Key) -> float | None:
        """When ``key`` was last seen to change, if it was ever seen."""
        with self._lock:
            s = self._seen.get(key)
        return None if s is None else s.at

    def forget(self, key: Key) -> None:
        """Drop a party that is gone (a deleted Host or HostTask)."""
        with self._lock:
            self._seen.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
