"""``kubectl vmresize abandon-destination NAME``: an admin's way out of a dead destination.

Finishing, Reverting and RollingBack wait on the destination's agent. When that host is
gone for good, this command sets ``spec.abandonDestination`` (the chart's admission policy
lets only admins do it; the API server's audit log records who): the operator fences the
copy there (the Host's ``status.orphans``: its agent destroys it and never starts it),
starts the VM on its source again and ends the resize with reason ``DestinationAbandoned``.
Without ``--yes`` it only says what it would do.
"""

from __future__ import annotations

import argparse

from vmresize.api.resize import ABANDONABLE_PHASES, TERMINAL_PHASES, ResizePhase, VMResize
from vmresize.operator.cli.exitcodes import Exit
from vmresize.operator.cli.follow import Until, follow
from vmresize.operator.cli.kube import Kube
from vmresize.operator.cli.output import Out
from vmresize.operator.cli.views import parse, phase_of
from vmresize.operator.decisions.abandon import REASON

HELP = ("abandon the dead destination of a resize stuck in Finishing, Reverting or "
        "RollingBack: fence its copy there, start the instance on its source (admins)")


def add_options(p: argparse.ArgumentParser) -> None:
    """NAME, ``--yes``, ``--wait`` and ``--timeout``."""
    p.add_argument("resize", metavar="NAME")
    p.add_argument("--yes", action="store_true",
                   help="do it (without: only say what would be done)")


def abandon_destination(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Set ``spec.abandonDestination`` (with ``--yes``); with ``--wait`` follow to the end."""
    r = parse(VMResize, kube.get("vmresizes", args.resize))
    st, phase = r.status, phase_of(r)
    dest = (st.dest_host if st else None) or "?"
    src = (st.source_host if st else None) or "?"
    what = (f"{args.resize} ({phase.value}): abandon destination {dest}; its copy "
            f"{(st.dest_domain_name if st else None) or '?'} is fenced there (its agent "
            f"destroys it when it comes back and never starts it) and the instance starts on "
            f"{src} again")
    if r.spec.abandon_destination:   # idempotent: said once, the operator goes on
        out.line(f"{args.resize} ({phase.value}) has abandoned its destination {dest} already")
        return (follow(kube, out, args.resize, Until.END, args.timeout)
                if args.wait and phase not in TERMINAL_PHASES else Exit.OK)
    if phase not in ABANDONABLE_PHASES:
        out.error(f"{args.resize} is {phase.value}; a destination can be abandoned only "
                  "while the resize waits on it (Finishing, Reverting, RollingBack)")
        return Exit.REFUSED
    if not args.yes:
        out.line(f"would {what}. Check first that {dest} is really gone (its agent silent, "
                 "the host down); then run again with --yes.")
        return Exit.USAGE
    kube.patch_resize_spec(args.resize, {"abandonDestination": True})
    out.line(f"vmresize.vmresize.io/{args.resize} patched: spec.abandonDestination=true; "
             f"{what}")
    if not args.wait:
        out.line(f"follow it: kubectl vmresize watch {args.resize}")
        return Exit.OK
    code = follow(kube, out, args.resize, Until.END, args.timeout)
    end = parse(VMResize, kube.get("vmresizes", args.resize))
    est = end.status
    if est is not None and est.reason == REASON and est.phase in (
            ResizePhase.ROLLED_BACK, ResizePhase.REVERTED):
        o = est.abandoned_destination
        if o is not None:
            out.line(f"orphan recorded on Host {o.host}: domain {o.domain_name}, directory "
                     f"{o.disk_dir} (kubectl get host {o.host} -o jsonpath="
                     "'{.status.orphans}')")
        return Exit.OK   # the instance runs on its source: what was asked for
    return code
