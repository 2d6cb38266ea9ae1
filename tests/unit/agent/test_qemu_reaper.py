"""The embedded driver's reaper: a daemonized QEMU is reaped the moment it exits.

libvirt counts a zombie QEMU as alive and checks again only every 0.2 s, so a zombie left
for the reaper's scans (two, 0.1 s apart) made every power-off of the embedded driver
longer by up to 0.4 s. A real process stands in for QEMU: a program named
``qemu-system-…`` that daemonizes as QEMU does (fork, ``setsid``, fork), so it is
re-parented to this process (a subreaper, as the agent is).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from vmresize.agent.hypervisor import embedded

DAEMONIZE = """
import os, sys
if os.fork() == 0:
    os.setsid()
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv(sys.argv[1], [sys.argv[1], "30"])
    print(pid, flush=True)
    os._exit(0)
os.wait()
"""


def _fake_qemu(tmp_path: Path, program: str = "sleep") -> Path:
    exe = tmp_path / "qemu-system-x86_64"   # comm: "qemu-system-x86"
    exe.symlink_to(shutil.which(program) or f"/bin/{program}")
    return exe


def _wait_for(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_a_daemonized_qemu_is_reaped_as_it_exits(tmp_path: Path) -> None:
    embedded.become_subreaper()
    embedded.start_reaper(only="qemu-system")
    out = subprocess.run([sys.executable, "-c", DAEMONIZE, str(_fake_qemu(tmp_path))],
                         capture_output=True, text=True, check=True, timeout=30)
    pid = int(out.stdout)
    try:
        time.sleep(0.35)   # the reaper's scans have seen it running
        os.kill(pid, signal.SIGTERM)
        t0 = time.monotonic()
        assert _wait_for(lambda: not Path(f"/proc/{pid}").exists(), 2.0)
        # The scans alone need two sightings 0.1 s apart: at least 0.1 s as a zombie.
        assert time.monotonic() - t0 < 0.09
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_libvirts_own_child_is_left_to_libvirt(tmp_path: Path) -> None:
    """A qemu-system process this process started itself (as libvirt starts QEMU before
    it daemonizes) is not waited for: its exit status belongs to whoever started it."""
    embedded.become_subreaper()
    embedded.start_reaper(only="qemu-system")
    child = subprocess.Popen([str(_fake_qemu(tmp_path, "sh")), "-c", "sleep 0.4; exit 3"])
    try:
        assert child.wait(timeout=10) == 3   # a stolen exit status reads as 0
    finally:
        child.kill()
