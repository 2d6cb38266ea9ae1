"""``drain HOST`` and ``cancel-drain NAME``: empty a Host for maintenance, or stop doing so.

``drain`` creates a cluster-scoped HostDrain (the operator does the rest: it disables the
Host and cold-migrates its instances ``--max-parallel`` at a time); with ``--wait`` it
prints a line each time the drain's progress changes, then every instance that could not
move with its reason, and ends with the drain's verdict as exit status. ``cancel-drain``
sets ``spec.cancel``: no new moves; those under way finish.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from vmresize.api.drain import TERMINAL_DRAIN_PHASES, DrainPhase, HostDrain, ItemState
from vmresize.api.meta import API_VERSION
from vmresize.operator.cli.exitcodes import Exit
from vmresize.operator.cli.kube import Kube
from vmresize.operator.cli.output import Out

HELP = "drain HOST: disable it and cold-migrate its instances N at a time (a HostDrain)"
#: Seconds between two looks at a drain being followed (a drain takes minutes).
POLL_SECONDS = 2.0
_EXIT = {DrainPhase.DRAINED: Exit.OK, DrainPhase.CANCELLED: Exit.OK,
         DrainPhase.INCOMPLETE: Exit.FAILED, DrainPhase.FAILED: Exit.FAILED}


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``drain``."""
    p.add_argument("host", metavar="HOST")
    p.add_argument("--max-parallel", type=int, default=1, metavar="N",
                   help="instances moved at once (default 1)")
    p.add_argument("--reason", default="", help="why, for other admins (the Host shows it)")
    p.add_argument("--name", help="HostDrain name (default: HOST-drain-<random>)")


def summary(d: HostDrain) -> str:
    """One line: phase, progress, counts, ETA."""
    st = d.status
    if st is None:
        return "Pending"
    c = st.counts
    eta = f", ETA {st.eta:%H:%M:%S}Z" if st.eta else ""
    return (f"{st.phase.value} {st.progress or '0/0'}: moved {c.moved}, moving {c.moving}, "
            f"waiting {c.waiting}, failed {c.failed}{eta}")


def _failures(out: Out, d: HostDrain) -> None:
    for i in (d.status.instances if d.status else []):
        if i.state is ItemState.FAILED:
            out.line(f"  {i.namespace}/{i.name}: {i.reason} {i.message}".rstrip())


def follow(kube: Kube, out: Out, name: str, timeout: float) -> Exit:
    """Print the drain's progress as it changes until it ends (or ``timeout`` passes)."""
    deadline, last = time.monotonic() + timeout, ""
    while True:
        d = HostDrain.from_body(kube.get("hostdrains", name))
        line = summary(d)
        if line != last:
            out.line(line)
            last = line
        if d.status is not None and d.status.phase in TERMINAL_DRAIN_PHASES:
            _failures(out, d)
            out.line(d.status.message)
            return _EXIT[d.status.phase]
        if time.monotonic() >= deadline:
            out.error(f"still {summary(d)} after {timeout:.0f}s; the drain goes on")
            return Exit.TIMEOUT
        time.sleep(POLL_SECONDS)


def drain(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Create a HostDrain of HOST; with ``--wait`` follow it to its end."""
    kube.get("hosts", args.host)   # a typo is an error here, not a drain that fails later
    spec: dict[str, Any] = {"host": args.host, "maxParallel": args.max_parallel}
    if args.reason:
        spec["reason"] = args.reason
    meta = {"name": args.name} if args.name else {"generateName": f"{args.host[:50]}-drain-"}
    made = kube.create_cluster("hostdrains", {"apiVersion": API_VERSION,
                                              "kind": HostDrain.kind_name,
                                              "metadata": meta, "spec": spec})
    name = made["metadata"]["name"]
    out.line(f"hostdrain.vmresize.io/{name} created: draining {args.host}, "
             f"{args.max_parallel} at a time")
    if not args.wait:
        out.line(f"follow it: kubectl get hostdrain {name} -w")
        return Exit.OK
    return follow(kube, out, name, args.timeout)


def cancel(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Set ``spec.cancel`` on a HostDrain; with ``--wait`` follow it until the running moves
    finished."""
    kube.patch_cluster_spec("hostdrains", args.drain, {"cancel": True})
    out.line(f"hostdrain.vmresize.io/{args.drain} patched: spec.cancel=true (no new moves; "
             "those under way finish)")
    if not args.wait:
        return Exit.OK
    return follow(kube, out, args.drain, args.timeout)
