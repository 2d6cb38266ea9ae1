"""``kubectl vmresize`` (the console script, as a subprocess: real exit statuses) against a
real API server, the real operator and the fake agents.

stdout is a pipe here, so every run must print plain lines: no escape codes, no bars.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.op_harness import Fulfiller, Operator, World, wait_for

PLUGIN = Path(sys.executable).with_name("kubectl-vmresize")
RICH_MARKS = ("\x1b", "━", "╸", "█")   # an escape code or a drawn bar means not plain


def run(kubeconfig: Path, ns: str, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """The plugin with ``KUBECONFIG`` (as kubectl honours it); (status, stdout, stderr)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    p = subprocess.run([str(PLUGIN), *args, "-n", ns], env=env, capture_output=True,
                       text=True, timeout=timeout)
    plain(p.stdout + p.stderr)
    return p.returncode, p.stdout, p.stderr


def plain(text: str) -> None:
    """The output holds no terminal drawing."""
    assert not [m for m in RICH_MARKS if m in text], text


def test_start_wait_then_confirm_wait(kubeconfig: Path, world: World, agents: Fulfiller,
                                      operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b", memory_mib=8192 + 512)
    world.instance("web", "small", host="a")

    rc, out, err = run(kubeconfig, world.ns, "start", "web", "--flavor", world.flavor("medium"),
                       "--name", "r1", "--wait", "--timeout", "60s")
    assert rc == 0, out + err
    assert "vmresize.vmresize.io/r1 created" in out
    for phase in ("Scheduling", "Preparing", "Migrating", "Finishing", "VerifyResize"):
        assert f"  {phase} " in out, out     # one line as each phase is entered
    assert "timeline:" in out
    assert "downtime: 0.8s" in out           # the MigrateDisk result, via the status
    assert f"web runs on {world.host('b')} with flavor {world.flavor('medium')}" in out
    assert world.status("vmresizes", "r1")["phase"] == "VerifyResize"

    rc, out, err = run(kubeconfig, world.ns, "confirm", "r1", "--wait", "--timeout", "60s")
    assert rc == 0, out + err
    assert "spec.confirm=true (phase VerifyResize)" in out
    assert "Confirmed" in out
    assert "r1 confirmed" in out
    assert world.status("vmresizes", "r1")["phase"] == "Confirmed"

    rc, out, _ = run(kubeconfig, world.ns, "list")
    assert rc == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "PHASE", "INSTANCE", "FROM", "TO", "FLAVOR", "PROGRESS",
                              "AGE"]
    assert row.split()[:6] == ["r1", "Confirmed", "web", world.host("a"), world.host("b"),
                               world.flavor("medium")]
    assert "100% 100.0 MiB/100.0 MiB" in row

    # The API server refuses a revert after a confirm (CEL); its words are shown as they are.
    rc, out, err = run(kubeconfig, world.ns, "revert", "r1")
    assert rc == 5, out + err
    assert "confirm and revert are mutually exclusive" in err


def test_watch_shows_the_copy_and_times_out(kubeconfig: Path, world: World, agents: Fulfiller,
                                            operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("web", "small", host="a")
    agents.script.hold.add(("MigrateDisk", None))
    world.resize("r1", "web", "medium")
    wait_for("the copy's progress in the status", lambda: (
        world.status("vmresizes", "r1").get("progress", {}).get("percent") == 42))

    rc, out, err = run(kubeconfig, world.ns, "watch", "r1", "--timeout", "2s")
    assert rc == 6, out + err
    assert "progress 42% 42.0 MiB/100.0 MiB at 310.0 MiB/s, ETA 0.2s" in out
    assert "timed out after 2.0s: r1 is still in Migrating" in err
    rc, out, err = run(kubeconfig, world.ns, "confirm", "r1")    # refused at admission
    assert rc == 5, out + err
    assert "spec.confirm is accepted only while the resize is in VerifyResize; it is " \
           "Migrating" in err

    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    watcher = subprocess.Popen([str(PLUGIN), "watch", "r1", "-n", world.ns, "--timeout", "60s"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert watcher.stdout is not None
    seen = []
    while not (seen and seen[-1].startswith("progress 42%")):   # it follows the copy...
        seen.append(watcher.stdout.readline())
        assert seen[-1], "watch ended before it showed the copy"
    agents.release("MigrateDisk")                               # ...to its end
    out, err = watcher.communicate(timeout=90)
    out = "".join(seen) + out
    plain(out + err)
    assert watcher.returncode == 0, out + err
    lines = out.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("progress 42%"))) < lines.index(
        next(x for x in lines if x.startswith("progress 100% 100.0 MiB/100.0 MiB")))
    assert "VerifyResize" in out
    assert "downtime: 0.8s" in out


def test_rolled_back_resize_is_not_success(kubeconfig: Path, world: World, agents: Fulfiller,
                                           operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b")
    world.instance("web", "small", host="a")
    agents.script.fail[("MigrateDisk", None)] = "connection reset by peer"
    agents.script.non_retryable = True

    rc, out, err = run(kubeconfig, world.ns, "start", "web", "--flavor", world.flavor("medium"),
                       "--name", "r1", "--wait", "--timeout", "60s")
    assert rc == 3, out + err
    assert "RolledBack" in out
    assert f"web runs on {world.host('a')}, unchanged" in out
    assert "connection reset by peer" in out
    assert world.status("vmresizes", "r1")["phase"] == "RolledBack"


def test_no_valid_host_exit_status_and_plan(kubeconfig: Path, world: World, agents: Fulfiller,
                                            operator: Operator) -> None:
    # 3 GiB usable RAM each: medium (2 GiB) fits the other host, large (4 GiB) none.
    world.make_host("a", memory_mib=3072 + 512)
    world.make_host("b", memory_mib=3072 + 512)
    world.instance("web", "small", host="a")

    rc, out, err = run(kubeconfig, world.ns, "plan", "web", "--flavor", world.flavor("medium"))
    assert rc == 0, out + err
    assert f"scheduler: {world.host('b')} (alternates: none)" in out
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(world.ns)}
    assert "removed by SameHost" in rows[world.host("a")]
    assert "chosen" in rows[world.host("b")]
    assert "allocated size not known" in out          # never moved; not invented
    assert "virtual size 10 GiB" in out

    rc, out, err = run(kubeconfig, world.ns, "plan", "web", "--flavor", world.flavor("large"))
    assert rc == 4, out + err
    assert "NoValidHost: none of" in out
    assert "SameHost=1" in out
    assert "RAM=1" in out
    assert "removed by RAM" in {ln.split()[0]: ln for ln in out.splitlines()
                                 if ln.startswith(world.ns)}[world.host("b")]
    assert not world.co.list_namespaced_custom_object(
        "vmresize.io", "v1alpha1", world.ns, "vmresizes")["items"]   # plan changed nothing

    rc, out, err = run(kubeconfig, world.ns, "start", "web", "--flavor", world.flavor("large"),
                       "--name", "r1", "--wait", "--timeout", "60s")
    assert rc == 4, out + err
    assert "NoValidHost" in out
    assert "hosts removed by each filter" in out

    # After a finished move, plan predicts from what it measured (the fake agents report
    # 100 MiB sent at 310 MiB/s with 0.8 s downtime; every resize of the session does).
    rc, out, err = run(kubeconfig, world.ns, "start", "web", "--flavor", world.flavor("medium"),
                       "--name", "r2", "--wait", "--timeout", "60s")
    assert rc == 0, out + err
    rc, out, err = run(kubeconfig, world.ns, "plan", "web", "--flavor", world.flavor("medium"))
    assert "data to move: about 100.0 MiB allocated (what the last move of web sent" in out
    assert "rate 310.0 MiB/s, downtime 0.8s" in out
    assert "prediction: copy about 0.3s" in out
    assert "the operator would refuse it: InstanceBusy: VMResize r2" in out
    assert rc == 3, out + err


def test_refusals_and_usage(kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    rc, out, err = run(kubeconfig, namespace, "confirm", "nope")
    assert rc == 5
    assert 'vmresizes.vmresize.io "nope" not found' in err
    rc, _, err = run(kubeconfig, namespace, "watch", "nope", "--timeout", "soon")
    assert rc == 2
    assert "not a positive duration" in err
    rc, _, err = run(tmp_path / "missing", namespace, "list")
    assert rc == 2
    assert "kubeconfig" in err
    # --kubeconfig wins over KUBECONFIG, as in kubectl
    rc, out, _ = run(tmp_path / "missing", namespace, "list", "--kubeconfig", str(kubeconfig))
    assert rc == 0
    assert f"No VMResizes found in namespace {namespace}." in out
