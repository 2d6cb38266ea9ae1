"""What a test run (or the demo) started, so that SIGINT or SIGTERM stops all of it at once.

Daemons started with ``subprocess.Popen`` are tracked by their ``Popen`` (so a PID is only
ever signalled while its process is ours and unreaped); what is not a child of ours (the
QEMU guests an agent's libvirt daemonized, a tmpfs mount) is undone by a callback. The
owners untrack what they stop themselves, so that only what is left at a signal is hit.

:func:`install` makes the first SIGINT or SIGTERM stop everything tracked: SIGTERM to each
process, SIGKILL to what still runs after :data:`GRACE` seconds, then the callbacks, newest
first; then the process exits with 128 + the signal's number. pytest's own teardown is not
waited for: fixture finalizers talk to the API server and wait for clean stops, which is
what made a Ctrl-C of ``make test`` take over a minute. Nothing here ever signals a
process it did not start (no ``pkill``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

GRACE = 2.0
_procs: dict[int, subprocess.Popen[Any]] = {}
_cleanups: dict[int, tuple[str, Callable[[], object]]] = {}
_ids = itertools.count()
_lock = threading.Lock()
_stopping = threading.Event()


def track(proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
    """Stop ``proc`` at a signal (until :func:`untrack`)."""
    with _lock:
        _procs[id(proc)] = proc
    return proc


def untrack(proc: subprocess.Popen[Any] | None) -> None:
    """``proc`` was stopped by its owner."""
    if proc is not None:
        with _lock:
            _procs.pop(id(proc), None)


def on_stop(what: str, fn: Callable[[], object]) -> int:
    """Call ``fn`` at a signal (after the processes stopped); returns a key for :func:`done`."""
    key = next(_ids)
    with _lock:
        _cleanups[key] = (what, fn)
    return key


def done(key: int | None) -> None:
    """The cleanup ``key`` was done by its owner."""
    if key is not None:
        with _lock:
            _cleanups.pop(key, None)


def stop_all(out: Any = sys.stderr) -> None:
    """Stop every tracked process (TERM, then KILL after GRACE), then run the callbacks."""
    with _lock:
        procs = [p for p in _procs.values() if p.poll() is None]
        cleanups = sorted(_cleanups.items(), reverse=True)
        _procs.clear()
        _cleanups.clear()
    for p in procs:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait()
    for _, (what, fn) in cleanups:
        try:
            fn()
        except Exception as e:  # one failed cleanup must not keep the others from running
            print(f"children: {what}: {e!r}", file=out)
    print(f"children: stopped {len(procs)} processes ({', '.join(str(p.pid) for p in procs)})"
          f" and ran {len(cleanups)} cleanups", file=out)


def _signal(p: subprocess.Popen[Any], sig: int) -> None:
    if p.poll() is None:  # still ours: a reaped PID is never signalled
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _stopping.is_set():
        return
    _stopping.set()
    print(f"\nchildren: {signal.Signals(signum).name}: stopping what this run started",
          file=sys.stderr, flush=True)
    stop_all()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(128 + signum)


def install() -> None:
    """Handle SIGINT and SIGTERM as the module docstring says (main thread only)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)
