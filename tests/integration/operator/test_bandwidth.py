"""Bandwidth limits through the real API server and the real operator (fake agents): the
CRDs keep the new fields, and the MigrateDisk HostTask carries the lowest of the resize's and
both hosts' limits, with the note when the resize's was lowered; an agent writes the chart's
default into the Host it creates, and only then."""

from __future__ import annotations

from pathlib import Path

from tests.integration.operator.test_plugin import run
from tests.support.op_harness import Fulfiller, Operator, World

from vmresize.agent.kube.client import AgentKube
from vmresize.api.meta import GROUP, VERSION


def test_migrate_disk_carries_the_effective_limit(kubeconfig: Path, world: World,
                                                  agents: Fulfiller, operator: Operator) -> None:
    world.make_host("a")
    world.make_host("b", memory_mib=8192 + 512)
    for short, mibps in (("a", 100), ("b", 8)):
        world.co.patch_cluster_custom_object(GROUP, VERSION, "hosts", world.host(short),
                                             {"spec": {"migrationBandwidthMiBps": mibps}})
    world.instance("vm1", "small", host="a")
    rc, out, err = run(kubeconfig, world.ns, "plan", "vm1", "--flavor", world.flavor("medium"),
                       "--bandwidth", "20")
    assert rc == 0, out + err
    assert (f"bandwidth: the copy runs under 8 MiB/s (asked 20 MiB/s, lowered to host "
            f"{world.host('b')}'s migrationBandwidthMiBps 8 MiB/s)") in out, out
    rc, out, err = run(kubeconfig, world.ns, "start", "vm1", "--flavor", world.flavor("medium"),
                       "--name", "r1", "--bandwidth", "20", "--wait", "--timeout", "60s")
    assert rc == 0, out + err
    assert world.get("vmresizes", "r1")["spec"]["bandwidthMiBps"] == 20  # not pruned
    migrate = [t["spec"] for t in agents.seen.values() if t["spec"]["action"] == "MigrateDisk"]
    assert len(migrate) == 1
    assert migrate[0]["bandwidthMiBps"] == 8
    assert migrate[0]["hostBandwidthMiBps"] == 100
    assert migrate[0]["bandwidthNote"] == (f"asked 20 MiB/s, lowered to host "
                                           f"{world.host('b')}'s migrationBandwidthMiBps 8 MiB/s")


def test_an_agent_writes_the_chart_default_only_into_a_new_host(kubeconfig: Path,
                                                                world: World) -> None:
    kube = AgentKube.from_kubeconfig(kubeconfig)
    name = world.host("fresh")
    try:
        made = kube.ensure_host(name, bandwidth_mibps=64)
        assert made.spec.migration_bandwidth_mibps == 64
        world.co.patch_cluster_custom_object(GROUP, VERSION, "hosts", name,
                                             {"spec": {"migrationBandwidthMiBps": 5}})
        again = kube.ensure_host(name, bandwidth_mibps=64)  # an agent restart
        assert again.spec.migration_bandwidth_mibps == 5    # the admin's value stays
    finally:
        world.co.delete_cluster_custom_object(GROUP, VERSION, "hosts", name)
