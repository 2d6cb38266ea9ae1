"""Process plumbing the embedded QEMU driver (``qemu:///embed?root=…``) needs.

Measured on Debian 12 / libvirt 9.0 (see the agent's report in git history):

* the embedded driver only works with an event loop implementation registered *before* the
  connection is opened, and a thread running it (:func:`start_event_loop`);
* it reads ``<root>/etc/qemu.conf`` (not ``<root>/etc/qemu/qemu.conf``); without
  ``stdio_handler = "file"`` starting a domain fails trying to reach the system virtlogd;
  ``user``/``group`` = root avoids the DAC driver chowning disks to ``libvirt-qemu``
  (the user must still exist: ``hack/install-deps.sh`` creates it);
* QEMU daemonizes, so its processes are re-parented to the nearest subreaper. Unless this
  process is one (``prctl(PR_SET_CHILD_SUBREAPER)``) and reaps them, they stay zombies:
  libvirt then believes they are alive — opening the connection loops forever probing
  capabilities, and destroy waits for a process that never goes away.

* QEMU's monitor sockets live under the root (``<root>/lib/qemu/domain-<id>-<name20>/
  monitor.sock``) and a UNIX socket path must be < 108 bytes, so the root path may be at
  most :data:`MAX_ROOT_LEN` bytes long (pytest's ``tmp_path`` is already too long).

The reaper must not steal libvirt's *own* children (it ``waitpid``s the QEMU parent that
daemonizes, and fails with ECHILD if we got there first). It therefore only reaps a child
that has been a zombie for two consecutive scans: libvirt waits for its direct children at
once, so a zombie that lingers is an orphan nobody else will collect.

The daemonized QEMU itself is reaped the moment it exits: libvirt treats a zombie as
alive and, once it sees the monitor close, checks every 0.2 s until the process is gone
before it reports the domain shut off (measured: 0.16-0.40 s after QEMU's exit with the
scans alone, a cost every power-off paid while the VM was down). QEMU's ``-daemonize``
forks twice with a ``setsid`` in between, so the daemon is the one ``qemu-system`` child
in a session of its own that it does not lead; libvirt's direct child (session leader or
in ours) is never that. A thread per such daemon blocks in ``waitid`` on its pidfd.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from pathlib import Path

import libvirt

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
REAP_INTERVAL_SECONDS = 0.1  # other orphans wait at most two scans
QEMU_CONF = """\
# Written by vmresize-agent for the embedded QEMU driver.
user = "root"
group = "root"
stdio_handler = "file"
remember_owner = 0
"""

MAX_ROOT_LEN = 53
"""107 bytes minus ``/lib/qemu/domain-NNN-`` (21), a name cut to 20 and ``/monitor.sock``."""

_loop_lock = threading.Lock()
_loop_started = False
_reaper_started = False


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def become_subreaper() -> None:
    """Make this process adopt its orphaned descendants (QEMU after it daemonizes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def _children(me: int, only: str | None) -> tuple[set[int], set[int]]:
    """(zombie children whose name starts with ``only``, running daemonized QEMUs)."""
    zombies: set[int] = set()
    daemons: set[int] = set()
    my_sid = os.getsid(0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) < 4 or int(fields[1]) != me:
            continue
        if fields[0] == "Z":
            if only is None or comm.startswith(only):
                zombies.add(int(entry))
        elif comm.startswith("qemu-system") and int(fields[3]) not in (int(entry), my_sid):
            daemons.add(int(entry))
    return zombies, daemons


def _reap_when_it_exits(fd: int) -> None:
    """Block in ``waitid`` on a daemonized QEMU's pidfd: the kernel reaps it as it exits,
    before this thread runs Python again (a woken thread that then had to reap would
    lose the race against libvirt's check more often than not)."""
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, fd, os.WEXITED)
    finally:
        os.close(fd)


def start_reaper(*, only: str | None = None) -> None:
    """Reap orphaned zombie children in a daemon thread (once); see the module docstring.

    ``only`` restricts it to processes whose name starts with it (``"qemu-system"``): a
    test process that adopts QEMU must not collect the exit status of its own Popen
    children, which would then report 0.
    """
    global _reaper_started
    with _loop_lock:
        if _reaper_started:
            return
        _reaper_started = True

    def run() -> None:
        me = os.getpid()
        previous: set[int] = set()
        watched: set[int] = set()   # daemonized QEMUs a thread waits for
        while True:
            time.sleep(REAP_INTERVAL_SECONDS)
            current, daemons = _children(me, only)
            for pid in current & previous:
                with contextlib.suppress(ChildProcessError):  # libvirt got it after all
                    os.waitpid(pid, os.WNOHANG)
            previous = current
            watched &= daemons | current
            for pid in daemons - watched:
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue  # gone since the scan: a zombie the next scans reap
                watched.add(pid)
                threading.Thread(target=_reap_when_it_exits, args=(fd,), daemon=True,
                                 name=f"qemu-reaper-{pid}").start()

    threading.Thread(target=run, name="qemu-reaper", daemon=True).start()


def prepare_root(root: Path) -> Path:
    """Create an embedded driver root with the ``qemu.conf`` it needs; return it resolved."""
    root = root.resolve()
    if len(os.fsencode(root)) > MAX_ROOT_LEN:
        raise ValueError(f"embedded QEMU root {root} is longer than {MAX_ROOT_LEN} bytes: "
                         "QEMU's monitor socket paths would not fit in a UNIX address")
    (root / "etc").mkdir(parents=True, exist_ok=True)
    conf = root / "etc" / "qemu.conf"
    if not conf.exists() or conf.read_text() != QEMU_CONF:
        conf.write_text(QEMU_CONF)
    return root


def embed_uri(root: Path) -> str:
    """``qemu:///embed?root=<root>``."""
    return f"qemu:///embed?root={root.resolve()}"


def setup_for_uri(uri: str) -> None:
    """Do what ``uri`` needs before it is opened: event loop always; for embed, reaping too."""
    start_event_loop()
    if uri.startswith("qemu:///embed"):
        root = uri.split("root=", 1)[1].split("&", 1)[0]
        prepare_root(Path(root))
        become_subreaper()
        start_reaper()
