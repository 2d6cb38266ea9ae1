"""What the fault matrix checks after each cell, and the table it writes.

After a cell's fault has cleared and its resize has ended, :func:`judge` checks the
invariants of docs DESIGN.md against the ground truth, not against what the status says:

* data: unless the resize was confirmed, the source disk is byte for byte the file that
  was there when the VM was powered off (sha256 taken by the watcher at that moment, and
  the status's ``sourceChecksum`` agrees); once confirmed, the source copy is gone and
  the guest sees on the destination exactly the data it had (sha256 of the raw content);
* copies: exactly one QEMU runs the VM, it is the one the Instance names, and the two
  copies never ran at the same time; stopped is accepted only with RollbackFailed and a
  status that names both hosts;
* claims: ``Host.status.allocations`` hold exactly the Instance's claim, on its host, of
  its sizes, and nothing of the ended resize;
* the downtime, as seen by the watcher (no copy running) and as the status reports it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.checksum import file_disk_checksum
from tests.support.fault_stack import DATA_MIB, WAIT, FaultStack, Watcher
from tests.support.full_stack_harness import content_sha256, file_sha256
from tests.support.polling import wait_for
from vmresize.api.vmdisks import OVERLAY_SUFFIX


@dataclass
class Row:
    """One cell of the matrix as reported."""

    cell: str
    outcome: str
    data: str = ""
    copies: str = ""
    claims: str = ""
    downtime_s: float | None = None
    status_downtime_s: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _settled_instance(s: FaultStack, name: str) -> dict[str, Any]:
    """The Instance once no resize holds it any more (bounded), or as it is then."""
    try:
        return dict(wait_for(lambda: (st := s.status("instances", name)).get("phase") in (
            "Active", "Error", "Stopped") and st, timeout=WAIT / 2, what=f"{name} settled"))
    except AssertionError:
        return s.status("instances", name)


def judge(s: FaultStack, row: Row, w: Watcher, inst0: dict[str, Any], instance: str,
          resize: str, sha_before: str) -> Row:
    """Fill ``row`` with the checks of the module docstring; problems go to row.problems."""
    p = row.problems
    inst = _settled_instance(s, instance)
    if inst.get("phase") != "Active":
        p.append(f"Instance is {inst.get('phase')}: {inst.get('message')}")
    src_host = inst0["host"]
    dst_host = w.st.get("destHost")
    src_up, dst_up = w.running()
    up = [h for h, flag in ((src_host, src_up), (dst_host, dst_up)) if flag]
    # -- copies
    if w.both_ran:
        p.append("both copies ran at the same time")
    if len(up) == 1:
        where = "source" if src_up else "destination"
        row.copies = f"one ({where})"
        names = (src_host, inst0["domainName"]) if src_up else (dst_host, w.st.get(
            "destDomainName"))
        if (inst.get("host"), inst.get("domainName")) != names:
            p.append(f"the copy running ({names}) is not the Instance's "
                     f"({inst.get('host')}, {inst.get('domainName')})")
    else:
        row.copies = f"{len(up)} running"
        msg = str(w.st.get("message", ""))
        if not (row.outcome == "RollbackFailed" and len(up) == 0 and src_host in msg
                and str(dst_host) in msg):
            p.append(f"{len(up)} copies run ({up}); status: {w.phase()}: {msg}")
    # -- data
    src_disk = s.agents[src_host].storage_root / inst0["diskPath"]
    confirmed = inst.get("host") == dst_host and dst_host is not None
    ref = w.sha_off or sha_before
    if confirmed:
        dst_disk = s.agents[dst_host].storage_root / inst["diskPath"]
        if src_disk.exists():
            p.append(f"confirmed, but the source disk {src_disk} is still there")
        got = content_sha256(dst_disk, DATA_MIB << 20) if dst_disk.exists() else "missing"
        row.data = "dest content = source" if got == s.base_sha else "DEST CONTENT DIFFERS"
        if got != s.base_sha:
            p.append(f"destination content {got} != the source's {s.base_sha}")
    else:
        got = file_sha256(src_disk) if src_disk.exists() else "missing"
        checksum = w.st.get("sourceChecksum")
        # sourceChecksum is the disk checksum (vmresize.agent.transfer.sparse), not
        # sha256sum's: the unchanged source must have that one too.
        ok = got == ref and checksum in (None, file_disk_checksum(src_disk))
        row.data = ("src sha256 unchanged" if w.sha_off else "src untouched (never off)") \
            if ok else "SOURCE CHANGED"
        if not ok:
            p.append(f"source disk sha256 {got}, at power-off {ref}, status {checksum}")
    # -- claims
    ns = s.ns
    want: dict[str, dict[str, tuple[int, int, int]]] = {}
    if inst.get("host"):
        want = {inst["host"]: {f"Instance/{ns}/{instance}": (
            inst.get("vcpus", 0), inst.get("memoryMiB", 0), inst.get("diskGiB", 0))}}
    got_claims = s.allocations({f"{ns}/{instance}", f"{ns}/{resize}"})
    row.claims = "consistent" if got_claims == want else "INCONSISTENT"
    if got_claims != want:
        p.append(f"claims {got_claims} != expected {want}")
    row.downtime_s = None if (d := w.downtime()) is None else round(d, 2)
    row.status_downtime_s = w.st.get("downtimeSeconds")
    if w.t_off is not None and w.t_on is None:
        p.append("the VM was powered off and never ran again")
    return row


def superseded_evidence(s: FaultStack, resize: str) -> list[str]:
    """Problems with a MigrateDisk that a rollback cut short (empty: none): it ended
    superseded, and no Finish was ever created (no step could start a second copy)."""
    uid = (s.get("vmresizes", resize) or {}).get("metadata", {}).get("uid")
    tasks = {t["spec"]["action"]: t.get("status") or {} for t in s._items("hosttasks")
             if t["spec"].get("ownerUid") == uid}
    p = ["a Finish task was created"] if "Finish" in tasks else []
    if "superseded" not in tasks.get("MigrateDisk", {}).get("message", ""):
        p.append(f"the stale MigrateDisk did not end superseded: {tasks.get('MigrateDisk')}")
    return p


def stall_evidence(s: FaultStack, resize: str) -> list[str]:
    """Problems with how the step watchdog handled a stalled copy (empty: none): the status
    and an Event give the reason; the stale MigrateDisk ended superseded; no Finish, so the
    frozen destination never got a step that could start a second copy."""
    r = s.get("vmresizes", resize) or {}
    uid, st = r.get("metadata", {}).get("uid"), r.get("status") or {}
    p = [] if st.get("rollbackReason") == "StepStalled" else [
        f"status gives no stall as the rollback's reason: {st.get('rollbackReason')}"]
    p += superseded_evidence(s, resize)
    events = client.CoreV1Api(s.api)

    def stalled_event() -> bool:
        found = events.list_namespaced_event(s.ns, field_selector=f"involvedObject.uid={uid}")
        return any(e.reason == "StepStalled" for e in found.items)
    try:
        wait_for(stalled_event, timeout=30, what="a StepStalled Event")
    except AssertionError:
        p.append(f"no StepStalled Event on {resize}")
    return p


def task_ends(s: FaultStack, resize: str, host: str) -> list[str]:
    """``Action Phase[: message]`` of each HostTask of ``resize`` on ``host``."""
    uid = (s.get("vmresizes", resize) or {}).get("metadata", {}).get("uid")
    return [f"{t['spec']['action']} {st.get('phase')}" + (
        f": {st['message']}" if "superseded" in st.get("message", "") else "")
        for t in s._items("hosttasks") if t["spec"].get("ownerUid") == uid
        and t["spec"]["host"] == host for st in [t.get("status") or {}]]


def source_overlays(w: Watcher) -> list[str]:
    """The pre-copy overlay files beside the source's disk now."""
    return sorted(x.name for x in w.src_disk.parent.glob(f"*{OVERLAY_SUFFIX}"))


def live_rollback_evidence(s: FaultStack, w: Watcher, resize: str, dest_dir: Path | None,
                           at_freeze: list[str], *, stalled: bool = True
                           ) -> tuple[list[str], str]:
    """Problems with a pre-copy resize stalled and rolled back in its live copy (empty:
    none), and a note for the row. Besides :func:`stall_evidence`: the source merged its
    overlays back live (no ``*.vmresize-overlay.qcow2`` beside its disk, and the running
    domain's disks are the original files again, as its live definition in the embedded
    driver's ``run/qemu/<domain>.xml`` says), and the destination keeps no file of the VM in
    ``dest_dir`` (its instance directory there). ``at_freeze``: the overlays seen when the
    fault began; none means the copy was not a live one. ``stalled`` False: the rollback
    was asked for (a cancel), so only the superseded MigrateDisk is checked, not the stall."""
    p = stall_evidence(s, resize) if stalled else superseded_evidence(s, resize)
    if not at_freeze:
        p.append("no overlay on the source when the fault began: no live copy")
    left = source_overlays(w)
    if left:
        p.append(f"overlays left on the source: {left}")
    live = w.src.libvirt_root / "run" / "qemu" / f"{w.src_dom}.xml"
    try:
        doc = ET.fromstring(live.read_text())  # noqa: S314 - libvirt wrote it
    except (OSError, ET.ParseError) as e:
        p.append(f"no live definition of {w.src_dom}: {e}")
    else:
        tops = [str(Path(src.get("file", "")).resolve()) for d in doc.iter("disk")
                if d.get("device") == "disk" and (src := d.find("source")) is not None]
        if str(w.src_disk.resolve()) not in tops or any(
                x.endswith(OVERLAY_SUFFIX) for x in tops):
            p.append(f"the running source's disks are {tops}, not {w.src_disk}")
    kept = [str(x) for x in dest_dir.rglob("*") if x.is_file()] if dest_dir else ["?"]
    if kept:
        p.append(f"the destination keeps files of the VM in {dest_dir}: {kept}")
    dest = w.dest[0].name if w.dest else ""
    return p, (f"overlays at the freeze {at_freeze}; "
               + ("VM never off" if w.t_off is None else "VM was powered off")
               + "; destination tasks: " + ", ".join(task_ends(s, resize, dest)))


def write_report(rows: list[Row], path: Path, runtime: float) -> str:
    """Markdown table at ``path``, the rows as JSON next to it; returns the Markdown."""
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"
    lines = [f"# vmresize fault matrix ({len(rows)} cells, {runtime:.0f} s)", "",
             "| cell | outcome | data check | copies | claims | downtime s (seen / status) "
             "| cell s | notes |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        notes = "; ".join(r.notes + [f"PROBLEM: {x}" for x in r.problems]).replace("|", "/")
        lines.append(f"| {r.cell} | {r.outcome} | {r.data} | {r.copies} | {r.claims} | "
                     f"{fmt(r.downtime_s)} / {fmt(r.status_downtime_s)} | {r.seconds:.0f} | "
                     f"{notes} |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(
        {"runtime_seconds": round(runtime, 1), "cells": [asdict(r) for r in rows]}, indent=2))
    return text
