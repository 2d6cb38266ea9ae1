"""``kubectl-vmresize``: arguments, the connection, and the exit status.

Options ``-n/--namespace``, ``--kubeconfig`` and ``--context`` behave as kubectl's
(``KUBECONFIG`` is honoured; the namespace defaults to the context's) and may come before
or after the command. API errors end the process with the status that
:mod:`vmresize.operator.cli.exitcodes` gives them; the server's message is printed as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from vmresize.api.apierrors import ApiErrorKind
from vmresize.api.envsettings import SettingsError
from vmresize.operator.cli import abandon, autoconfirm, commands, drain
from vmresize.operator.cli.exitcodes import Exit, help_table
from vmresize.operator.cli.kube import Kube, KubeconfigError, PluginApiError
from vmresize.operator.cli.output import Out

Command = Callable[[Kube, Out, argparse.Namespace], Exit]

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def duration(text: str) -> float:
    """``90``, ``90s``, ``10m`` or ``1h`` as seconds (kubectl's ``--timeout`` style)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 90s, 10m)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _common() -> argparse.ArgumentParser:
    """kubectl's connection options; SUPPRESS lets them stand before or after the command."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    p.add_argument("-n", "--namespace", help="namespace (default: the context's, or default)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    return p


def _wait_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true", help=f"follow it until {what}")
    p.add_argument("--timeout", type=duration, default=600.0,
                   help="give up waiting after this long (90s, 10m, 1h; default 10m)")


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    common = _common()
    top = argparse.ArgumentParser(
        prog="kubectl vmresize", parents=[common],
        description="Resize or cold-migrate vmresize Instances, follow them, confirm, "
                    "revert or cancel, and plan without doing.",
        epilog=help_table() + "\n\nOutput is plain lines (no bars, no colour) when stdout "
               "is not a terminal.", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_,
                           epilog=help_table(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(run=fn)
        return p

    p = add("start", commands.start, "resize INSTANCE to --flavor (creates a VMResize)")
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("--flavor", required=True, help="the new Flavor")
    p.add_argument("--to", metavar="HOST", help="force this destination host (admins)")
    p.add_argument("--name", help="VMResize name (default: INSTANCE-resize-<random>)")
    p.add_argument("--bandwidth", type=int, metavar="MIBPS",
                   help="this resize's copy limit (spec.bandwidthMiBps), MiB/s; a host's "
                        "lower limit wins")
    _wait_options(p, "VerifyResize or a final phase")
    autoconfirm.add_options(p)
    p = add("migrate", commands.migrate, "cold-migrate INSTANCE, same flavor")
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("--to", metavar="HOST", help="force this destination host (admins)")
    p.add_argument("--name", help="VMResize name (default: INSTANCE-resize-<random>)")
    p.add_argument("--bandwidth", type=int, metavar="MIBPS",
                   help="this resize's copy limit (spec.bandwidthMiBps), MiB/s; a host's "
                        "lower limit wins")
    _wait_options(p, "VerifyResize or a final phase")
    autoconfirm.add_options(p)
    p = add("watch", commands.watch, "follow a VMResize: progress, phases, downtime")
    p.add_argument("resize", metavar="NAME")
    p.add_argument("--timeout", type=duration, default=600.0,
                   help="give up after this long (90s, 10m, 1h; default 10m)")
    for name, fn, end in (("confirm", commands.confirm, "Confirmed"),
                          ("revert", commands.revert, "Reverted")):
        p = add(name, fn, f"{name} a resize in VerifyResize (spec.{name}=true)")
        p.add_argument("resize", metavar="NAME")
        _wait_options(p, f"{end} (or another final phase)")
    p = add("cancel", commands.cancel, "stop a resize before VerifyResize: it rolls back "
            "and ends Cancelled (spec.cancel=true; in VerifyResize use revert)")
    p.add_argument("resize", metavar="NAME")
    _wait_options(p, "Cancelled (or another final phase)")
    p = add("abandon-destination", abandon.abandon_destination, abandon.HELP)
    abandon.add_options(p)
    _wait_options(p, "RolledBack or Reverted (the instance runs on its source)")
    p = add("drain", drain.drain, drain.HELP)
    drain.add_options(p)
    _wait_options(p, "every instance moved or failed (Drained, Incomplete)")
    p = add("cancel-drain", drain.cancel, "cancel a HostDrain (spec.cancel=true): no new "
            "moves; those under way finish")
    p.add_argument("drain", metavar="NAME")
    _wait_options(p, "the moves under way finished (Cancelled)")
    p = add("list", commands.list_, "list VMResizes with phase, hosts and progress")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p = add("plan", commands.plan, "what a resize would do, without doing it")
    p.add_argument("instance", metavar="INSTANCE")
    p.add_argument("--flavor", help="the new Flavor (default: the current one, a migration)")
    p.add_argument("--to", metavar="HOST", help="a forced destination host")
    p.add_argument("--history", type=int, default=10, metavar="N",
                   help="predict from the last N finished copies (default 10)")
    p.add_argument("--bandwidth", type=int, metavar="MIBPS",
                   help="the resize's own limit (spec.bandwidthMiBps), MiB/s; the plan "
                        "predicts with the lowest of it and both hosts'")
    return top


def _code(e: PluginApiError) -> Exit:
    return Exit.ERROR if e.kind is ApiErrorKind.UNAVAILABLE else Exit.REFUSED


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status (see ``--help``)."""
    args = parser().parse_args(argv)
    out = Out()
    try:
        kube = Kube.connect(getattr(args, "kubeconfig", None), getattr(args, "context", None),
                            getattr(args, "namespace", None))
        code: Exit = args.run(kube, out, args)
    except (KubeconfigError, SettingsError) as e:
        out.error(str(e))
        return Exit.USAGE
    except PluginApiError as e:
        out.error(e.message)
        return _code(e)
    except KeyboardInterrupt:
        out.error("interrupted; the resize goes on (kubectl vmresize watch NAME)")
        return 130
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
