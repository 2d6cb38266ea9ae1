"""``kubectl vmresize abandon-destination`` (issue 18, finding 6) against a real API server,
the real operator and the fake agents: a Finish that never ends (its host is gone) is
abandoned, the instance comes back on its source and the orphan is fenced on the Host."""

from __future__ import annotations

from pathlib import Path

from tests.integration.operator.test_plugin import run
from tests.support.op_harness import Fulfiller, Operator, World, wait_for


def test_abandon_a_destination_stuck_in_finishing(kubeconfig: Path, world: World,
                                                  agents: Fulfiller, operator: Operator
                                                  ) -> None:
    world.make_host("a")
    world.make_host("b", memory_mib=8192 + 512)
    world.instance("web", "small", host="a")
    agents.script.hold.add(("Finish", None))   # the destination never answers again
    world.resize("r1", "web", "medium")
    wait_for("Finishing", lambda: world.status("vmresizes", "r1").get("phase") == "Finishing")

    rc, out, err = run(kubeconfig, world.ns, "abandon-destination", "r1")
    assert rc == 2, out + err
    assert f"would r1 (Finishing): abandon destination {world.host('b')}" in out
    assert "run again with --yes" in out
    assert world.status("vmresizes", "r1")["phase"] == "Finishing", "nothing was done"

    rc, out, err = run(kubeconfig, world.ns, "abandon-destination", "r1", "--yes", "--wait",
                       "--timeout", "60s")
    assert rc == 0, out + err
    assert "spec.abandonDestination=true" in out
    assert f"orphan recorded on Host {world.host('b')}" in out
    st = world.status("vmresizes", "r1")
    assert (st["phase"], st["reason"]) == ("RolledBack", "DestinationAbandoned")
    orphan = st["abandonedDestination"]
    assert orphan["host"] == world.host("b")
    uid = world.get("vmresizes", "r1")["metadata"]["uid"]
    fenced = world.status("hosts", world.host("b"))["orphans"][uid]
    assert fenced["domainName"] == orphan["domainName"] == st["destDomainName"]
    assert fenced["diskDir"] == st["destDiskPath"].rsplit("/", 1)[0]
    assert "cleanedAt" not in fenced
    inst = world.status("instances", "web")
    assert (inst["phase"], inst["host"], inst["powerState"]) == ("Active", world.host("a"),
                                                                 "Running")
    assert not inst.get("activeResize")
    assert "RestoreSource@" + world.host("a") in agents.actions()
    assert not [a for a in agents.actions() if a.startswith("CleanupDest")], \
        "nothing is asked of the dead host"
    assert world.allocations("b") == {}, "the destination claim is released"
    events = world.events_once("r1", "DestinationAbandoned")
    assert any(e.startswith("Warning DestinationAbandoned") and orphan["domainName"] in e
               for e in events), events

    rc, out, err = run(kubeconfig, world.ns, "abandon-destination", "r1", "--yes")
    assert rc == 0, out + err   # said once: nothing more to do
    assert "r1 (RolledBack) has abandoned its destination" in out

    agents.release("Finish")
    world.resize("r2", "web", "medium")   # a resize that does not wait on its destination
    wait_for("VerifyResize", lambda: world.status("vmresizes", "r2").get("phase") ==
             "VerifyResize")
    rc, out, err = run(kubeconfig, world.ns, "abandon-destination", "r2", "--yes")
    assert rc == 5, out + err
    assert "r2 is VerifyResize; a destination can be abandoned only while" in err
