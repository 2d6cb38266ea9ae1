"""Follow one VMResize from a watch until it reaches the phase waited for, or time is up.

Prints a line per phase as it is entered (with the operator's reason and message), the disk
copy as it goes (:class:`~vmresize.operator.cli.output.CopyProgress`), and at the end the
phase timeline and the downtime. The exit status comes from the phase it stopped in
(:func:`vmresize.operator.cli.exitcodes.for_phase`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import Enum

from vmresize.api.hosttask import PowerOff
from vmresize.api.resize import TERMINAL_PHASES, ResizePhase, VMResize
from vmresize.operator.cli.exitcodes import Exit, for_phase
from vmresize.operator.cli.kube import Kube
from vmresize.operator.cli.output import Out
from vmresize.operator.cli.views import human_seconds, parse, phase_of, timeline


class Until(Enum):
    """Where following stops (a terminal phase always stops it)."""

    VERIFY = "VerifyResize"
    """VerifyResize: the user has a decision to make."""
    END = "end"
    """Only a terminal phase (Confirmed, Reverted, ...)."""


def reached(phase: ResizePhase, until: Until) -> bool:
    """Whether a resize in ``phase`` is where ``until`` stops."""
    return phase in TERMINAL_PHASES or (until is Until.VERIFY
                                        and phase is ResizePhase.VERIFY_RESIZE)


def _clock(at: datetime | None) -> str:
    return (at or datetime.now(UTC)).astimezone().strftime("%H:%M:%S")


def _phase_line(r: VMResize) -> str:
    st = r.status
    phase = phase_of(r)
    at = st.phase_timestamps.get(phase.value) if st else None
    reason = st.reason if st and st.reason != phase.value else ""
    words = f"{reason}: {st.message}" if st and reason else (st.message if st else "")
    return f"{_clock(at)}  {phase.value:<13} {words}".rstrip()


def summary(out: Out, r: VMResize) -> None:
    """The phase timeline, the downtime and what to do next."""
    st = r.status
    if st is None:
        return
    stamps = dict(st.phase_timestamps)
    created = r.metadata.get("creationTimestamp")
    if created and ResizePhase.PENDING.value not in stamps:   # entered on creation
        stamps[ResizePhase.PENDING.value] = datetime.fromisoformat(created.replace("Z", "+00:00"))
    rows = [[p, _clock(at), human_seconds(d) if d is not None else ""]
            for p, at, d in timeline(stamps)]
    if rows:
        out.line("timeline:")
        out.table(["phase", "entered", "took"], rows)
    if st.downtime_seconds is not None:
        out.line(f"downtime: {human_seconds(st.downtime_seconds)} (the VM was off for the move)")
    if st.power_off_wait_seconds is not None:
        forced = " then forced off" if st.power_off is PowerOff.FORCED else ""
        out.line(f"power-off wait: {human_seconds(st.power_off_wait_seconds)} (the VM ran "
                 f"until it stopped{forced}; not downtime)")
    phase = st.phase
    if phase is ResizePhase.VERIFY_RESIZE:
        deadline = (f"; auto-confirm at {_clock(st.verify_deadline)}"
                    if st.verify_deadline else "")
        out.line(f"{r.name} is in VerifyResize: {r.spec.instance_name} runs on {st.dest_host} "
                 f"with flavor {st.new_flavor}{deadline}.", style="bold green")
        out.line(f"  keep it:    kubectl vmresize confirm {r.name}")
        out.line(f"  go back:    kubectl vmresize revert {r.name}")
    elif phase is ResizePhase.CONFIRMED:
        out.line(f"{r.name} confirmed: {r.spec.instance_name} runs on {st.dest_host} "
                 f"with flavor {st.new_flavor}.", style="bold green")
    elif phase is ResizePhase.REVERTED:
        out.line(f"{r.name} reverted: {r.spec.instance_name} runs on {st.source_host} "
                 f"with flavor {st.old_flavor}, unchanged.", style="bold")
    elif phase is ResizePhase.CANCELLED:
        where = f"runs on {st.source_host}, unchanged" if st.source_host else "was not moved"
        out.line(f"{r.name} cancelled: {r.spec.instance_name} {where}. {st.message}",
                 style="bold")
    elif phase in (ResizePhase.ROLLED_BACK, ResizePhase.FAILED):
        where = f" runs on {st.source_host}, unchanged" if st.source_host else " was not moved"
        out.line(f"{r.name} {phase.value}: {r.spec.instance_name}{where}. "
                 f"{st.reason}: {st.message}", style="bold red")
        if st.filter_counts:
            counts = ", ".join(f"{k}={v}" for k, v in st.filter_counts.items() if v)
            out.line(f"  hosts removed by each filter: {counts}")
    elif phase is ResizePhase.ROLLBACK_FAILED:
        out.line(f"{r.name} RollbackFailed: both copies are kept for an admin. "
                 f"{st.reason}: {st.message}", style="bold red")


def follow(kube: Kube, out: Out, name: str, until: Until, timeout: float) -> Exit:
    """Follow VMResize ``name`` until ``until`` or ``timeout`` seconds; its exit status."""
    deadline = time.monotonic() + timeout
    last: VMResize | None = None
    seen: ResizePhase | None = None
    with out.copy_progress() as bar:
        for kind, body in kube.follow(name, deadline):
            r = parse(VMResize, body)
            last, phase = r, phase_of(r)
            if phase is not seen:
                bar.say(_phase_line(r))
                seen = phase
            p = r.status.progress if r.status else None
            if p is not None:
                bar.update(phase.value, p.bytes_done, p.bytes_total, p.rate_bytes_per_second)
            if kind == "DELETED":
                bar.say(f"{name} was deleted in {phase.value}")
                return Exit.FAILED
            if reached(phase, until):
                break
    if last is None:  # kube.follow always yields the object first
        raise AssertionError("no VMResize body")
    phase = phase_of(last)
    if not reached(phase, until):
        out.error(f"timed out after {human_seconds(timeout)}: {name} is still in "
                  f"{phase.value}")
        return Exit.TIMEOUT
    summary(out, last)
    return for_phase(phase, last.status.reason if last.status else "")

