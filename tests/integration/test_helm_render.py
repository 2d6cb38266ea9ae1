"""The Helm chart at deploy/helm/vmresize rendered by the real helm binary (no cluster).

Lint, every template, the objects the defaults and overrides render (metrics Services,
ServiceMonitors and the dashboard included), their names, and the chart's CRD copies
against crds/. The values schema is in test_helm_values, installs in test_helm_install,
the chart against the code in test_helm_entrypoints.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from tests.support import REPO
from tests.support.chart import CHART, TEMPLATES, Helm, container_env, find


def sources(rendered_text: str) -> set[str]:
    return set(re.findall(r"^# Source: vmresize/(\S+)$", rendered_text, re.MULTILINE))


def test_lint_strict_passes(helm: Helm) -> None:
    proc = helm.run("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[ERROR]" not in proc.stdout
    assert "[WARNING]" not in proc.stdout


def test_every_template_renders(helm: Helm) -> None:
    """Defaults render every template but the peering one, which replicaCount=2 adds, and the
    monitoring ones, which their values turn on."""
    defaults = helm.run("template", "vmresize", str(CHART), "-n", "vmresize-system").stdout
    ha = helm.run("template", "vmresize", str(CHART), "-n", "vmresize-system",
                  "--set", "operator.replicaCount=2", "--set",
                  "metrics.serviceMonitor.enabled=true", "--set",
                  "metrics.dashboard.enabled=true").stdout
    files = {str(p.relative_to(CHART)) for p in TEMPLATES.rglob("*.yaml")}
    assert files - sources(defaults) == {"templates/operator-peering.yaml",
                                         "templates/servicemonitor.yaml",
                                         "templates/dashboard-configmap.yaml"}
    assert files <= sources(ha)


def test_defaults_render_the_documented_objects(helm: Helm) -> None:
    docs = helm.template()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("CustomResourceDefinition") == 6
    for d in docs:
        if d["metadata"].get("namespace") is not None:
            assert d["metadata"]["namespace"] == "vmresize-system"
        assert len(d["metadata"]["name"]) <= 63
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "vmresize"
    assert {find(docs, "ServiceAccount", n)["metadata"]["name"]
            for n in ("vmresize-operator", "vmresize-agent")} == {"vmresize-operator",
                                                                  "vmresize-agent"}
    for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_operator_deployment(helm: Helm) -> None:
    dep = find(helm.template(), "Deployment", "vmresize-operator")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["vmresize-operator"]
    assert c["args"] == ["--standalone", "--liveness=http://0.0.0.0:8080/healthz"]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VMRESIZE_NAMESPACE"] == "vmresize-system"
    assert env["VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST"] == "false"
    assert env["VMRESIZE_AUTO_CONFIRM_SECONDS"] == "0"
    assert env["VMRESIZE_MAX_ATTEMPTS"] == "3"
    assert env["VMRESIZE_HEARTBEAT_STALE_SECONDS"] == "60"
    assert env["VMRESIZE_TASK_RETRIES"] == "5"
    assert env["VMRESIZE_POLL_SECONDS"] == "5"
    assert env["VMRESIZE_POWER_OFF_TIMEOUT_SECONDS"] == "60"
    assert env["VMRESIZE_METRICS_PORT"] == "8090"
    assert env["VMRESIZE_RAM_WEIGHT_MULTIPLIER"] == "1"
    assert env["VMRESIZE_CPU_WEIGHT_MULTIPLIER"] == "0"
    assert env["VMRESIZE_DISK_WEIGHT_MULTIPLIER"] == "0"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["serviceAccountName"] == "vmresize-operator"


def test_operator_settings_and_ha_peering(helm: Helm) -> None:
    docs = helm.template("--set", "operator.replicaCount=3",
                         "--set", "operator.settings.allowResizeToSameHost=true",
                         "--set-json", "operator.settings.weighers.ramWeightMultiplier=-1.5")
    c = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=vmresize-operator" in c["args"]
    assert "--standalone" not in c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST"] == "true"
    assert env["VMRESIZE_RAM_WEIGHT_MULTIPLIER"] == "-1.5"
    find(docs, "CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")
    peering = find(docs, "ClusterKopfPeering", "vmresize-operator")
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    rules = find(docs, "ClusterRole", "vmresize-operator")["rules"]
    assert any("clusterkopfpeerings" in r["resources"] for r in rules)


def test_agent_daemonset(helm: Helm) -> None:
    ds = find(helm.template(), "DaemonSet", "vmresize-agent")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["vmresize-agent"]
    assert "args" not in c  # settings come as variables (test_chart_env_is_the_settings_models)
    env = {e["name"]: e for e in c["env"]}
    assert env["VMRESIZE_HOST_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["VMRESIZE_MIGRATION_ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "status.podIP"
    assert env["VMRESIZE_MIGRATION_KEY_FILE"]["value"] == "/etc/vmresize/migration/id_ed25519"
    assert pod["hostNetwork"] is True
    assert pod["nodeSelector"] == {"vmresize.io/hypervisor": "true"}
    assert c["ports"] == [{"name": "migration", "containerPort": 2222, "hostPort": 2222,
                           "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 8091, "protocol": "TCP"}]
    assert env["VMRESIZE_METRICS_PORT"]["value"] == "8091"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["libvirt-run"] == volumes["libvirt-run"]["hostPath"]["path"] == \
        "/var/run/libvirt"
    assert mounts["storage"] == volumes["storage"]["hostPath"]["path"] == "/var/lib/vmresize"
    assert volumes["migration-key"]["secret"]["secretName"] == "vmresize-migration-key"
    assert pod["serviceAccountName"] == "vmresize-agent"


def test_metrics_services_service_monitors_and_dashboard(helm: Helm) -> None:
    """The agents' headless metrics Service; the ServiceMonitors and the dashboard ConfigMap
    only when asked for, each following its component's metrics.enabled."""
    docs = helm.template()
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "ConfigMap")]
    svc = find(docs, "Service", "vmresize-agent-metrics")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8091, "targetPort": "metrics",
                                     "protocol": "TCP"}]
    pod_labels = find(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()

    docs = helm.template("--set", "metrics.serviceMonitor.enabled=true",
                         "--set", "metrics.serviceMonitor.interval=15s",
                         "--set", "metrics.serviceMonitor.labels.release=kps",
                         "--set", "metrics.dashboard.enabled=true",
                         "--set", "metrics.dashboard.namespace=monitoring")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"vmresize-operator", "vmresize-agent"}
    for name, sm in monitors.items():
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["metadata"]["namespace"] == "vmresize-system"
        assert sm["metadata"]["labels"]["release"] == "kps"
        assert sm["spec"]["namespaceSelector"] == {"matchNames": ["vmresize-system"]}
        (endpoint,) = sm["spec"]["endpoints"]
        assert endpoint["port"] == "metrics"
        assert endpoint["interval"] == "15s"
        # It selects exactly its component's metrics Service.
        selected = [s for s in services.values()
                    if sm["spec"]["selector"]["matchLabels"].items()
                    <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in selected] == [f"{name}-metrics"]
    assert monitors["vmresize-agent"]["spec"]["endpoints"][0]["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    cm = find(docs, "ConfigMap", "vmresize-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "vmresize.json").read_text())
    assert json.loads(cm["data"]["vmresize.json"]) == shipped

    docs = helm.template("--set", "metrics.serviceMonitor.enabled=true",
                         "--set", "agent.metrics.enabled=false")
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceMonitor"] == [
        "vmresize-operator"]
    assert not [d for d in docs if d["metadata"]["name"] == "vmresize-agent-metrics"]
    env = container_env(docs, "DaemonSet")
    assert env["VMRESIZE_METRICS_PORT"]["value"] == "0"
    ports = find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["name"] for p in ports] == ["migration"]


def test_names_follow_the_release_and_stay_within_63_characters(helm: Helm) -> None:
    docs = helm.template(release="prod")
    sas = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert sas == {"prod-vmresize-operator", "prod-vmresize-agent"}
    long = "r" * 53
    for d in helm.template(release=long):
        assert len(d["metadata"]["name"]) <= 63, d["metadata"]["name"]
        assert not d["metadata"]["name"].endswith("-")


def test_chart_needs_kubernetes_1_30_for_validating_admission_policy_v1(helm: Helm) -> None:
    proc = helm.run("template", "x", str(CHART), "--kube-version", "1.29.0", check=False)
    assert proc.returncode != 0
    assert "chart requires kubeVersion: >=1.30.0-0" in proc.stderr
    assert helm.template("--kube-version", "1.30.0")


def test_overrides_reach_every_object(helm: Helm) -> None:
    docs = helm.template("--set", "global.commonLabels.team=infra",
                         "--set-json", 'global.imagePullSecrets=["regcred"]',
                         "--set-json", 'agent.tolerations=[{"key":"hv","operator":"Exists"}]',
                         "--set-json", 'operator.extraArgs=["--verbose"]',
                         "--set-json", 'agent.extraEnv=[{"name":"A","value":"b"}]',
                         "--set", "agent.migration.port=2022",
                         "--set", "agent.libvirtURI=qemu+ssh://root@127.0.0.1/system")
    assert all(d["metadata"]["labels"]["team"] == "infra" for d in docs)
    pod = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"key": "hv", "operator": "Exists"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (c,) = pod["containers"]
    assert {"name": "A", "value": "b"} in c["env"]
    assert {"name": "VMRESIZE_MIGRATION_PORT", "value": "2022"} in c["env"]
    assert {"name": "VMRESIZE_LIBVIRT_URI", "value": "qemu+ssh://root@127.0.0.1/system"} in \
        c["env"]
    assert c["ports"][0]["containerPort"] == c["ports"][0]["hostPort"] == 2022
    op = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert op["args"][-1] == "--verbose"


def test_crds_disabled_renders_no_crd(helm: Helm) -> None:
    docs = helm.template("--set", "crds.enabled=false", "--set", "operator.replicaCount=2")
    assert [d for d in docs if d["kind"] == "CustomResourceDefinition"] == []
    assert find(docs, "Deployment")


def test_crds_keep_false_drops_the_annotation(helm: Helm) -> None:
    docs = helm.template("--set", "crds.keep=false")
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 6
    assert all("annotations" not in c["metadata"] for c in crds)


@pytest.mark.parametrize("crd_file", sorted(p.name for p in (REPO / "crds").glob("*.yaml")))
def test_chart_crds_match_generated_crds(helm: Helm, crd_file: str) -> None:
    (rendered,) = helm.template("--show-only", f"templates/crds/{crd_file}")
    generated = yaml.safe_load((REPO / "crds" / crd_file).read_text())
    assert rendered["spec"] == generated["spec"]
    assert rendered["metadata"]["name"] == generated["metadata"]["name"]


def test_tenant_roles_aggregate_and_the_catalog_binding_follows_its_subjects(
        helm: Helm) -> None:
    """Default: view/edit/catalog-reader labelled for aggregation, the reader bound to every
    authenticated user. Without aggregation or subjects, the roles stay, unlabelled/unbound."""
    docs = helm.template("--show-only", "templates/tenant-rbac.yaml")
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    assert set(roles) == {"vmresize-view", "vmresize-edit", "vmresize-catalog-reader"}
    agg = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k in roles["vmresize-edit"]["metadata"]["labels"] if k.startswith(agg)} == {
        agg + "edit", agg + "admin"}
    edit_kinds = {r for rule in roles["vmresize-edit"]["rules"] for r in rule["resources"]}
    assert edit_kinds == {"instances", "vmresizes"}
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": "system:authenticated"}]
    docs = helm.template("--show-only", "templates/tenant-rbac.yaml",
                         "--set", "tenantRBAC.aggregate=false",
                         "--set-json", "tenantRBAC.catalogReader.groups=[]")
    assert [d["kind"] for d in docs] == ["ClusterRole"] * 3
    assert not any(k.startswith(agg) for d in docs for k in d["metadata"]["labels"])
