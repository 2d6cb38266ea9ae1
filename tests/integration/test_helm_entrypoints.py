"""The chart and the code agree: the variables and arguments the chart renders are what
the settings models and both entry points understand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tests.support.chart import Helm, container_env, find


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_chart_env_is_the_settings_models(helm: Helm, kind: str) -> None:
    """Every VMRESIZE_* variable the chart sets is a field of the process's model, and every
    field is set unless hack/settingsgen.py's wiring says the chart leaves it unset."""
    from hack.settingsgen import WIRING

    from vmresize.agent.settings import AgentSettings
    from vmresize.operator.settings import Settings

    model = Settings if kind == "Deployment" else AgentSettings
    env = container_env(helm.template(), kind)
    chart = {n for n in env if n.startswith("VMRESIZE_")}
    unset = {model.env_name(w.field) for w in WIRING[model] if w.note.startswith("not set")}
    assert chart == {model.env_name(f) for f in model.model_fields} - unset
    assert {n for n in env if not n.startswith("VMRESIZE_")} == {"POD_NAME"}


def test_operator_settings_read_the_chart_env(helm: Helm) -> None:
    """The env the chart renders is what the operator's Settings.from_env understands."""
    from vmresize.operator.settings import Settings

    docs = helm.template("--set", "operator.settings.allowResizeToSameHost=true",
                         "--set", "operator.settings.autoConfirmSeconds=600",
                         "--set", "operator.settings.maxAttempts=4",
                         "--set-json", "operator.settings.heartbeatStaleSeconds=30.5",
                         "--set", "operator.settings.taskRetries=7",
                         "--set-json", "operator.settings.pollSeconds=2.5",
                         "--set", "operator.settings.peeringLifetimeSeconds=20",
                         "--set-json", "operator.settings.weighers.ramWeightMultiplier=2.0",
                         "--set-json", "operator.settings.weighers.cpuWeightMultiplier=-1.0",
                         "--set-json", "operator.settings.weighers.diskWeightMultiplier=0.5",
                         "--set", "operator.metrics.port=9000")
    env = {n: e["value"] for n, e in container_env(docs, "Deployment").items() if "value" in e}
    assert Settings.from_env(env) == Settings.from_env({
        "VMRESIZE_NAMESPACE": "vmresize-system", "VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST": "1",
        "VMRESIZE_AUTO_CONFIRM_SECONDS": "600", "VMRESIZE_MAX_ATTEMPTS": "4",
        "VMRESIZE_TASK_RETRIES": "7", "VMRESIZE_HEARTBEAT_STALE_SECONDS": "30.5",
        "VMRESIZE_RAM_WEIGHT_MULTIPLIER": "2", "VMRESIZE_CPU_WEIGHT_MULTIPLIER": "-1",
        "VMRESIZE_DISK_WEIGHT_MULTIPLIER": "0.5", "VMRESIZE_POLL_SECONDS": "2.5",
        "VMRESIZE_PEERING_LIFETIME_SECONDS": "20", "VMRESIZE_METRICS_PORT": "9000"})
    docs = helm.template("--set", "operator.metrics.enabled=false")
    env = {n: e["value"] for n, e in container_env(docs, "Deployment").items() if "value" in e}
    assert Settings.from_env(env).metrics_port == 0
    assert Settings.from_env(env).heartbeat_stale_seconds == 60.0


@pytest.mark.parametrize("replicas", [1, 2])
def test_operator_entry_point_accepts_the_chart_args(
        helm: Helm, replicas: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Deployment's command line, given to the real console-script ``main``, reaches
    kopf.run as a cluster-wide operator with the chart's peering and liveness endpoint."""
    import kopf

    from vmresize.operator import __main__ as entry

    c = find(helm.template("--set", f"operator.replicaCount={replicas}"),
             "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["vmresize-operator"]
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kw: runs.append(kw))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    entry.main(c["args"])
    (run,) = runs
    assert run["clusterwide"] is True
    assert run["standalone"] is (replicas == 1)
    if replicas > 1:
        assert run["peering_name"] == "vmresize-operator"
    assert run["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"


def test_agent_entry_point_reads_the_chart_env(helm: Helm) -> None:
    """The DaemonSet's variables, with the downward-API ones filled in as the kubelet does,
    parse into the agent settings the chart means."""
    from vmresize.agent.main import parse_args

    docs = helm.template("--set-json", "agent.settings.heartbeatSeconds=2.5")
    c = find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["vmresize-agent"]
    downward = {"spec.nodeName": "hv-1", "status.podIP": "10.0.0.7", "metadata.name": "p"}
    env = {e["name"]: e["value"] if "value" in e else
           downward[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in c["env"]}
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("VMRESIZE_")]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        cfg = parse_args(c.get("args", []))
    assert cfg.host_name == "hv-1"
    assert cfg.libvirt_uri == "qemu:///system"
    assert cfg.storage_root == Path("/var/lib/vmresize")
    assert cfg.state_dir == Path("/var/lib/vmresize-agent")
    assert cfg.migration_address == "10.0.0.7"
    assert cfg.migration_port == 2222
    assert cfg.migration_key_file == Path("/etc/vmresize/migration/id_ed25519")
    assert cfg.namespace == "vmresize-system"
    assert cfg.heartbeat_seconds == 2.5
    assert cfg.kubeconfig is None
    assert cfg.stop_vms_on_exit is False
    assert cfg.metrics_port == 8091
