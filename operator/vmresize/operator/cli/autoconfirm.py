"""``start``/``migrate`` options for ``spec.autoConfirm``: a timer, or a health check.

``--health-tcp HOST:PORT``, ``--health-http URL`` or ``--health-guest-agent`` name the
check (at most one); ``--auto-confirm-after`` delays it (without a check it is the plain
timer) and ``--health-window`` bounds it. This module only turns the options into the
spec's shape; the API server judges the values (its message is printed as it is).
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit


def host_port(text: str) -> dict[str, Any]:
    """``10.0.0.5:22`` or ``[fd00::5]:22`` as ``{"host", "port"}``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r} (e.g. 10.0.0.5:22)")
    return {"host": host.removeprefix("[").removesuffix("]"), "port": int(port)}


def http_url(text: str) -> dict[str, Any]:
    """``http://HOST[:PORT]/PATH`` as ``{"host", "port", "path"}`` (plain HTTP only: the
    probe sends no TLS)."""
    u = urlsplit(text)
    try:
        port = u.port
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from e
    if u.scheme != "http" or not u.hostname:
        raise argparse.ArgumentTypeError(f"not an http:// URL: {text!r} "
                                         "(e.g. http://10.0.0.5:8080/healthz)")
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return {"host": u.hostname, "port": port or 80, "path": path}


def add_options(p: argparse.ArgumentParser) -> None:
    """The auto-confirm options of ``start`` and ``migrate``."""
    g = p.add_argument_group("auto-confirm (spec.autoConfirm)")
    check = g.add_mutually_exclusive_group()
    check.add_argument("--health-tcp", type=host_port, metavar="HOST:PORT",
                       help="confirm once the destination reaches this TCP port; revert if "
                            "it does not within the window")
    check.add_argument("--health-http", type=http_url, metavar="URL",
                       help="confirm once GET URL answers 2xx (http:// only)")
    check.add_argument("--health-guest-agent", action="store_true",
                       help="confirm once the QEMU guest agent answers guest-ping")
    g.add_argument("--health-window", type=int, metavar="SECONDS",
                   help="how long the check may take to pass (default 300)")
    g.add_argument("--auto-confirm-after", type=int, metavar="SECONDS",
                   help="without a check: confirm this long after VerifyResize; with one: "
                        "wait this long before the first probe")


def auto_confirm(args: argparse.Namespace) -> dict[str, Any] | None:
    """``spec.autoConfirm`` from the options, or None when none was given."""
    check: dict[str, Any] | None = None
    if getattr(args, "health_tcp", None):
        check = {"tcp": args.health_tcp}
    elif getattr(args, "health_http", None):
        check = {"http": args.health_http}
    elif getattr(args, "health_guest_agent", False):
        check = {"guestAgent": {}}
    out: dict[str, Any] = {}
    if check is not None:
        out["check"] = check
    if getattr(args, "health_window", None) is not None:
        out["windowSeconds"] = args.health_window
    if getattr(args, "auto_confirm_after", None) is not None:
        out["afterSeconds"] = args.auto_confirm_after
    return out or None
