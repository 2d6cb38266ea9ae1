"""``vmresize-operator`` / ``python -m vmresize.operator``: run kopf in-process.

Uses the same handler registry as ``kopf run -m vmresize.operator.handlers``.

    python -m vmresize.operator [--standalone | --peering NAME [--priority N]]
                                [--namespace NS] [--liveness URL] [-v]

``--namespace NS`` keeps HostTasks in NS and watches only NS (as the tests do);
otherwise HostTasks go to ``VMRESIZE_NAMESPACE`` and every namespace is watched.
Settings are ``VMRESIZE_*`` variables (docs/settings.md); an invalid one stops the process
before kopf starts, with exit status 2 and a message naming the variable.
Without ``--peering`` the peering name is ``vmresize-operator`` and peering is used only
if kopf's peering CRD exists; with it, peering is mandatory (HA replicas).
"""

from __future__ import annotations

import argparse
import os

import kopf

import vmresize.operator.handlers  # noqa: F401 - registers the handlers
from vmresize.api.envsettings import SettingsError
from vmresize.operator.handlers.startup import PEERING
from vmresize.operator.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, check the settings (exit 2 naming a bad variable) and run kopf in
    this process until it stops."""
    p = argparse.ArgumentParser(prog="vmresize-operator", description=__doc__.split("\n")[0])
    p.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    p.add_argument("--namespace", help="HostTask namespace, and the only one watched")
    p.add_argument("--peering", default=None, help=f"kopf peering name (default {PEERING})")
    p.add_argument("--liveness", default=None, help="kopf liveness endpoint, e.g. "
                   "http://0.0.0.0:8080/healthz")
    p.add_argument("--priority", type=int, default=None,
                   help="kopf peering priority: the highest live one acts, the rest wait")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.namespace:
        os.environ["VMRESIZE_NAMESPACE"] = args.namespace
    try:  # fail before kopf starts; the start-up handler reads the same settings again
        Settings.from_env()
    except SettingsError as e:
        p.exit(2, f"vmresize-operator: {e}\n")
    kopf.configure(verbose=args.verbose)   # kopf's own log format and levels
    kopf.run(standalone=args.standalone, peering_name=args.peering,
             liveness_endpoint=args.liveness, priority=args.priority,
             namespaces=[args.namespace] if args.namespace else (),
             clusterwide=not args.namespace)


if __name__ == "__main__":
    main()
