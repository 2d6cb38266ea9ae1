"""Where the time of one resize goes: a per-hop timeline from the API server's watch.

:class:`TaskWatch` records, on the bench's monotonic clock, when each HostTask of a
namespace was first seen in each phase (``Created``: its first event, before the agent
wrote any status). Together with :class:`bench.fleet.PhaseWatch` (the VMResize's phases)
that splits apply -> VerifyResize into hops between two watch events, each owned by one
party:

=====================  ========================================================
hop                    what it is
=====================  ========================================================
create                 the client's create request, until the first watch event
->Scheduling           the operator's daemon starts, validates, writes Scheduling
->Preparing            schedules, claims, writes Preparing
Prepare created        the Prepare HostTask is created after that write
Prepare picked up      the destination agent sees it and writes Running
Prepare ran            its work, until it writes Succeeded
->Migrating            the operator sees it, writes Migrating ...
...                    (the same for MigrateDisk on the source, Finish on the
                       destination)
->VerifyResize         the operator sees Finish Succeeded, writes VerifyResize
=====================  ========================================================

Every instant is when this process received the event, so each hop also carries the
watch's delivery latency (the same for all hops, a few ms on loopback).
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from bench.fleetkit import NamespaceWatch
from kubernetes import client

TASKS = (("Prepare", "Preparing", "Migrating"), ("MigrateDisk", "Migrating", "Finishing"),
         ("Finish", "Finishing", "VerifyResize"))


class TaskWatch(NamespaceWatch):
    """When each HostTask of the namespace was first seen in each phase (monotonic)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        #: (owner name, action, phase) -> first seen; phase "Created" for the first event.
        self.seen: dict[tuple[str, str, str], float] = {}
        #: (owner name, action) -> the status the agent last wrote (its own timestamps).
        self.last: dict[tuple[str, str], dict[str, Any]] = {}
        super().__init__(client.CustomObjectsApi(api), namespace, "hosttasks")

    def seen_object(self, obj: dict[str, Any], t: float) -> None:
        spec = obj.get("spec") or {}
        owner = str(spec.get("owner", "")).rpartition("/")[2]
        action = str(spec.get("action", ""))
        st = obj.get("status") or {}
        self.seen.setdefault((owner, action, "Created"), t)
        if st.get("phase"):
            self.seen.setdefault((owner, action, st["phase"]), t)
        self.last[(owner, action)] = st


def hops(name: str, t0: float, phase_at: Any, tw: TaskWatch) -> dict[str, float]:
    """The hops of the resize ``name`` (seconds, None-free: a missing instant is skipped).

    ``phase_at(name, phase)`` is the first time the VMResize was seen in ``phase`` ("" for
    the event without a status).
    """
    marks: list[tuple[str, float | None]] = [
        ("create", phase_at(name, "")),
        ("->Scheduling", phase_at(name, "Scheduling")),
        ("->Preparing", phase_at(name, "Preparing"))]
    for action, _, after in TASKS:
        marks += [(f"{action} created", tw.seen.get((name, action, "Created"))),
                  (f"{action} picked up", tw.seen.get((name, action, "Running"))),
                  (f"{action} ran", tw.seen.get((name, action, "Succeeded"))),
                  (f"->{after}", phase_at(name, after))]
    out: dict[str, float] = {}
    prev = t0
    for hop, at in marks:
        if at is None:
            continue
        out[hop] = round(at - prev, 4)
        prev = at
    # Inside MigrateDisk, by the source agent's own clock: until it asked for the power-off
    # (pre-copy: snapshot and live copy), and from then to its end (the downtime's share).
    st = tw.last.get((name, "MigrateDisk")) or {}
    res = st.get("result") or {}
    if st.get("startedAt") and res.get("poweredOffAt") and st.get("finishedAt"):
        start, off, end = (_ts(st["startedAt"]), _ts(res["poweredOffAt"]),
                           _ts(st["finishedAt"]))
        out["MigrateDisk: start->power-off (agent clock)"] = round(off - start, 4)
        out["MigrateDisk: power-off->done (agent clock)"] = round(end - off, 4)
    return out


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def summary(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median and max of each hop over the samples (in the order of the first sample)."""
    keys: list[str] = []
    for s in samples:
        keys += [k for k in s if k not in keys]
    return {k: {"p50": round(statistics.median(v), 3), "max": round(max(v), 3)}
            for k in keys if (v := [s[k] for s in samples if k in s])}


def table(by_tree: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown rows: one hop a row, p50 (max) per tree."""
    trees = list(by_tree)
    keys: list[str] = []
    for s in by_tree.values():
        keys += [k for k in s if k not in keys]
    rows = [f"| hop | {' | '.join(f'{t} p50 (max) s' for t in trees)} |",
            "|---|" + "---|" * len(trees)]
    for k in keys:
        cells = [f"{s[k]['p50']} ({s[k]['max']})" if k in s else "-"
                 for s in by_tree.values()]
        rows.append(f"| {k} | {' | '.join(cells)} |")
    return rows
