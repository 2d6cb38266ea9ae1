"""A real, private libvirtd for tests: its own config, state and socket; stopped by PID.

A privileged libvirtd reads ``/etc/libvirt/qemu.conf`` and keeps its state in
``/etc/libvirt``, ``/var/lib/libvirt``, ``/run/libvirt``, ``/var/log/libvirt`` and its QEMU
capability cache in ``/var/cache/libvirt``, whatever ``-f`` says. So it runs in a private
mount namespace (``unshare --mount``) where those directories are bind mounts of a work
directory: the host's files are never written (at most an empty mount point is created,
and removed again), and what the tests define disappears with the work directory. The
capability cache is bound from ``$VMRESIZE_CACHE/libvirtd/cache`` so it stays warm.

Why it used to take 40 s per defineXML (measured on libvirt 9.0, see LAB-FACTS.md): QEMU
runs as ``libvirt-qemu`` by default and ``/dev/kvm`` is ``root:root 0600`` here. The probe
finds KVM working (it runs as root), but every later lookup re-checks whether the *QEMU
user* can open ``/dev/kvm`` (``virQEMUCapsKVMUsable``), gets no, declares the cached
capabilities invalid ("KVM was enabled when probing … but it is not available now") and
probes again: two QEMU launches, ~4 s, on every capability lookup. ``user = "root"``
makes the cache valid; the rest of :data:`QEMU_CONF` only trims work tests do not need.

One test session at a time runs such daemons (an ``fcntl`` lock in ``$VMRESIZE_CACHE``),
and none when a libvirtd or virtqemud not started here is running: we refuse, never kill it.
Within a session several may run side by side (two "hosts", each with its own daemon,
socket, state and storage): the lock is taken once for all of them and each one's private
mount namespace keeps their ``/run/libvirt``, ``/var/lib/libvirt`` etc. apart; they share
only the capability cache, which libvirt rewrites atomically.

    python3 -m hack.libvirtd up --dir DIR    # prints the URI; down --dir DIR stops it
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hack import children

LIBVIRTD = "/usr/sbin/libvirtd"
READY_TIMEOUT = 60.0
LOCK_TIMEOUT = 900.0  # another session's e2e run; a bound, then we give up
STOP_GRACE = 15.0
#: system directory -> the work directory's subdirectory bound over it
BINDS = {"/etc/libvirt": "etc", "/var/lib/libvirt": "lib", "/run/libvirt": "run",
         "/var/log/libvirt": "log"}
CACHE_DIR = "/var/cache/libvirt"
QEMU_CONF = """\
# Written by hack/libvirtd.py for a private test daemon.
# root: the QEMU capability cache stays valid (see the module docstring), and QEMU reads
# test disks in any temporary directory.
user = "root"
group = "root"
remember_owner = 0
# no virtlogd: QEMU's stdout/stderr go straight to /var/log/libvirt/qemu/<name>.log
stdio_handler = "file"
# no AppArmor profile, cgroup or per-VM /dev namespace to set up: nothing tests rely on
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""


class LibvirtdUnavailableError(RuntimeError):
    """This machine cannot run the private daemon now (the message says why)."""


#: PIDs of the daemons this process started and has not stopped yet, and the session lock
#: they share (flock conflicts between two opens even within one process).
_OURS: set[int] = set()
_SHARED_LOCK: dict[str, IO[str]] = {}


def cache_root() -> Path:
    return Path(os.environ.get("VMRESIZE_CACHE", Path.home() / ".cache" / "vmresize"))


def running_daemons() -> dict[int, str]:
    """PIDs of every libvirtd/virtqemud on the machine (ours included, if running)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                exe = os.readlink(f"/proc/{entry}/exe")
                if os.path.basename(exe).removesuffix(" (deleted)") in ("libvirtd",
                                                                        "virtqemud"):
                    found[int(entry)] = exe
    return found


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class PrivateLibvirtd:
    """One private libvirtd. ``start()`` then ``stop()`` (or ``with``); stop is idempotent."""

    workdir: Path
    cache: Path = field(default_factory=lambda: cache_root() / "libvirtd" / "cache")
    pid: int | None = None
    sockdir: Path | None = None
    _lock: IO[str] | None = None
    _mountpoints: list[Path] = field(default_factory=list)

    @property
    def uri(self) -> str:
        """``qemu+unix://``: plain ``qemu:///system`` would go to an embedded QEMU driver
        instead, in a process that has opened ``qemu:///embed`` ("Missing URI parameter
        'root'"); the explicit transport always picks the remote driver."""
        assert self.sockdir is not None, "not started"
        return f"qemu+unix:///system?socket={self.sockdir / 'libvirt-sock'}"

    @property
    def log(self) -> Path:
        return self.workdir / "libvirtd.log"

    def qemu_log(self, domain: str) -> Path:
        return self.workdir / "log" / "qemu" / f"{domain}.log"

    def __enter__(self) -> PrivateLibvirtd:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _take_lock(self, timeout: float) -> None:
        if _OURS and "lock" in _SHARED_LOCK:  # a sibling of this process holds it
            self._lock = _SHARED_LOCK["lock"]
            return
        path = cache_root() / "libvirtd.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        f = path.open("a+")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    f.close()
                    raise LibvirtdUnavailableError(
                        f"{path} is held by another test session for {timeout:.0f}s") from None
                time.sleep(1)
        self._lock = _SHARED_LOCK["lock"] = f

    def start(self, *, lock_timeout: float = LOCK_TIMEOUT) -> PrivateLibvirtd:
        if os.geteuid() != 0:
            raise LibvirtdUnavailableError("a privileged libvirtd needs root")
        for tool in (LIBVIRTD, shutil.which("unshare")):
            if not tool or not os.access(tool, os.X_OK):
                raise LibvirtdUnavailableError(
                    f"missing {tool or 'unshare'} (hack/install-deps.sh)")
        self._take_lock(lock_timeout)
        try:
            others = {pid: exe for pid, exe in running_daemons().items() if pid not in _OURS}
            if others:
                raise LibvirtdUnavailableError(
                    f"a libvirt daemon not started by this harness is running {others}; "
                    "refusing to start a second one next to it (and never stopping it)")
            self._spawn()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        w = self.workdir.resolve()
        for sub in (*BINDS.values(), "log/qemu"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        (w / "etc" / "qemu.conf").write_text(QEMU_CONF)
        # A short socket path (sun_path is 108 bytes), out of the bind-mounted trees.
        self.sockdir = Path(tempfile.mkdtemp(prefix="vr-lvd-", dir="/tmp"))
        conf = w / "libvirtd.conf"
        conf.write_text(
            f'unix_sock_dir = "{self.sockdir}"\n'
            'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            # capability probes are logged so a test can see whether the cache was used
            'log_level = 3\nlog_filters = "1:qemu.qemu_capabilities 1:util.filecache"\n'
            f'log_outputs = "1:file:{self.log}"\n')
        mounts = {**{sys_dir: str(w / sub) for sys_dir, sub in BINDS.items()},
                  CACHE_DIR: str(self.cache.resolve())}
        for target in mounts:
            if not os.path.isdir(target):
                os.makedirs(target)
                self._mountpoints.append(Path(target))
        script = "set -e\n" + "".join(
            f"mount --bind '{src}' '{dst}'\n" for dst, src in mounts.items()) + \
            f"exec {LIBVIRTD} -f '{conf}' -p /run/libvirt/libvirtd.pid\n"
        out = (w / "libvirtd.out").open("ab")
        # unshare and sh exec: the PID we get is libvirtd's own.
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                 "sh", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.pid = proc.pid
        self._proc = children.track(proc)
        self._cleanup = children.on_stop(f"QEMUs of libvirtd in {w}", self._kill_qemus)
        _OURS.add(proc.pid)
        (w / "pid.json").write_text(json.dumps({
            "libvirtd": proc.pid, "sockdir": str(self.sockdir),
            "mountpoints": [str(m) for m in self._mountpoints]}))

    def _wait_ready(self) -> None:
        assert self.pid is not None
        assert self.sockdir is not None
        sock = self.sockdir / "libvirt-sock"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not _alive(self.pid):
                raise RuntimeError(f"libvirtd exited; see {self.workdir / 'libvirtd.out'} "
                                   f"and {self.log}")
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(sock))
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"libvirtd not listening on {sock} after {READY_TIMEOUT}s")

    def qemu_pids(self) -> list[int]:
        """QEMU processes this daemon runs (from its private /run/libvirt/qemu)."""
        pids = []
        for pidfile in (self.workdir / "run" / "qemu").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                if b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return pids

    def _kill_qemus(self) -> None:
        for pid in self.qemu_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Destroy what still runs on this daemon, stop it by PID, drop the lock."""
        try:
            if self.pid is not None and _alive(self.pid):
                self._destroy_domains()
                os.kill(self.pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE
                while _alive(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _alive(self.pid):
                    os.kill(self.pid, signal.SIGKILL)
            self._kill_qemus()  # should a destroy have failed
            children.untrack(getattr(self, "_proc", None))
            children.done(getattr(self, "_cleanup", None))
            _OURS.discard(self.pid or 0)
            self.pid = None
            for mountpoint in reversed(self._mountpoints):
                with contextlib.suppress(OSError):  # not empty: someone else uses it now
                    mountpoint.rmdir()
            self._mountpoints.clear()
            if self.sockdir is not None:
                shutil.rmtree(self.sockdir, ignore_errors=True)
        finally:
            if self._lock is not None and not _OURS:  # the last of this process's daemons
                self._lock.close()  # releases the flock
                _SHARED_LOCK.pop("lock", None)
            self._lock = None

    def _destroy_domains(self) -> None:
        """Best effort: a test that failed half-way may leave a running domain behind."""
        try:
            import libvirt
        except ImportError:
            return
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(self.uri)
            try:
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
            finally:
                conn.close()

    def capability_cache_misses(self) -> int:
        """Times this daemon found no valid cached QEMU capabilities and probed QEMU."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(text.count(miss) for miss in (
            "No cached data", "Outdated cached capabilities", "no longer valid"))


def main() -> int:
    parser = argparse.ArgumentParser(description="a private libvirtd for tests")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "up":
        daemon = PrivateLibvirtd(args.dir).start(lock_timeout=0)
        # The lock dies with this process; `down` finds the daemon by the PID recorded in
        # DIR, and a later `up` still refuses while it runs (running_daemons()).
        print(daemon.uri)
        return 0
    record = args.dir / "pid.json"
    if record.exists():
        state = json.loads(record.read_text())
        daemon = PrivateLibvirtd(args.dir, pid=state["libvirtd"], sockdir=Path(state["sockdir"]),
                                 _mountpoints=[Path(m) for m in state["mountpoints"]])
        daemon.stop()
        record.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
