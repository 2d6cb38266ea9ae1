"""The Helm chart at deploy/helm/vmresize, checked with the real helm binary.

Rendering (lint, template, the values schema, the CRD copies) needs no cluster. Installing
uses the real local kube-apiserver: the shared session one, where the CRDs were already
applied from crds/ (so the chart installs with crds.enabled=false), and a private one for
the chart's own CRDs, their keep policy and kopf peering.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster import LocalCluster, ensure_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "vmresize"
TEMPLATES = CHART / "templates"
#: Every helm call is bounded; an install that does not wait for pods takes ~1 s.
HELM_TIMEOUT = 120


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(ensure_binaries() / "helm", tmp_path_factory.mktemp("helm-home"))


class Helm:
    """The real helm binary with its config, cache and data kept in a temporary home."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data")}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              env=self.env, timeout=HELM_TIMEOUT)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
        return proc

    def template(self, *args: str, release: str = "vmresize",
                 namespace: str = "vmresize-system") -> list[dict[str, Any]]:
        out = self.run("template", release, str(CHART), "-n", namespace, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def kubectl(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """kubectl against ``config``, bounded; raises with its stderr when ``check``."""
    proc = subprocess.run(["kubectl", f"--kubeconfig={config}", *args], capture_output=True,
                          text=True, timeout=HELM_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


def sources(rendered_text: str) -> set[str]:
    return set(re.findall(r"^# Source: vmresize/(\S+)$", rendered_text, re.MULTILINE))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


# --- rendering, no cluster ---------------------------------------------------------------


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
    assert kinds.count("CustomResourceDefinition") == 5
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
    env = _container_env(docs, "DaemonSet")
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
    assert len(crds) == 5
    assert all("annotations" not in c["metadata"] for c in crds)


@pytest.mark.parametrize(("setting", "message"), [
    ("operator.replicaCount=two", "operator.replicaCount: Invalid type. Expected: integer"),
    ("agent.migration.port=70000", "agent.migration.port: Must be less than or equal to 65535"),
    ("migrationKey.algorithm=dsa", "migrationKey.algorithm must be one of the following"),
    ("operator.settings.maxAttempts=0", "operator.settings.maxAttempts: Must be greater"),
    ("agent.settings.heartbeatSeconds=0", "agent.settings.heartbeatSeconds: Must be greater"),
    ("operator.bogus=1", "Additional property bogus is not allowed"),
    ("admission.validationActions[0]=Block", "must be one of the following: \"Deny\""),
    ("agent.storageRoot=relative/path", "agent.storageRoot: Does not match pattern"),
    ("operator.image.pullPolicy=Sometimes", "operator.image.pullPolicy must be one of"),
    ("crds.enabled=maybe", "crds.enabled: Invalid type. Expected: boolean"),
    ("admission.validationActions={Deny,Warn}", "admission.validationActions: Must not"),
    ("tenantRBAC.aggregate=yes", "tenantRBAC.aggregate: Invalid type. Expected: boolean"),
])
def test_schema_rejects_bad_values(helm: Helm, setting: str, message: str) -> None:
    proc = helm.run("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_needs_an_existing_secret_when_not_creating_the_key(helm: Helm) -> None:
    proc = helm.run("template", "x", str(CHART), "--set", "migrationKey.create=false",
                    check=False)
    assert proc.returncode != 0
    assert "migrationKey" in proc.stderr
    docs = helm.template("--set", "migrationKey.create=false",
                         "--set", "migrationKey.existingSecret=my-key")
    assert [d for d in docs if d["kind"] == "Secret"] == []
    role = find(docs, "Role", "vmresize-agent")
    assert {"resources": ["secrets"], "resourceNames": ["my-key"], "verbs": ["get"],
            "apiGroups": [""]} in role["rules"]


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


def _value_paths(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict):
        for key, value in values.items():
            yield f"{prefix}{key}"
            yield from _value_paths(value, f"{prefix}{key}.")


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield f"{prefix}{key}"
        yield from _schema_paths(sub, f"{prefix}{key}.")


def _free_form(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Paths of objects the schema passes through (resources, securityContext, labels...)."""
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" not in sub:
            yield f"{prefix}{key}"
        yield from _free_form(sub, f"{prefix}{key}.")


def test_values_and_schema_describe_the_same_keys() -> None:
    """Every key of values.yaml is in the schema (or inside a pass-through Kubernetes
    object), and the schema describes no key that values.yaml lacks."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_schema = set(_schema_paths(schema))
    in_values = set(_value_paths(yaml.safe_load((CHART / "values.yaml").read_text())))
    free = tuple(f"{p}." for p in _free_form(schema))
    assert in_schema - in_values == set()
    assert {p for p in in_values - in_schema if not p.startswith(free)} == set()


def test_every_values_key_has_a_comment() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    documented = set(_schema_paths(schema))
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    missing = []
    for n, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group(2)])
        stack.append((indent, m.group(2)))
        if path in documented and not lines[n - 1].lstrip().startswith("#"):
            missing.append(path)
    assert missing == []


@pytest.mark.parametrize("crd_file", sorted(p.name for p in (REPO / "crds").glob("*.yaml")))
def test_chart_crds_match_generated_crds(helm: Helm, crd_file: str) -> None:
    (rendered,) = helm.template("--show-only", f"templates/crds/{crd_file}")
    generated = yaml.safe_load((REPO / "crds" / crd_file).read_text())
    assert rendered["spec"] == generated["spec"]
    assert rendered["metadata"]["name"] == generated["metadata"]["name"]


# --- installing into a real API server ---------------------------------------------------


def _release_name() -> str:
    return f"r{uuid.uuid4().hex[:8]}"


def _secret_key(config: Path, ns: str, name: str) -> str:
    out = kubectl(config, "get", "secret", name, "-n", ns, "-o",
                  "jsonpath={.data.id_ed25519}").stdout
    return base64.b64decode(out).decode()


def test_install_upgrade_uninstall_on_the_session_cluster(helm: Helm, kubeconfig: Path) -> None:
    """The session's CRDs come from crds/, so the chart installs with crds.enabled=false."""
    asyncssh = pytest.importorskip("asyncssh")
    release, ns = _release_name(), f"vmresize-{uuid.uuid4().hex[:8]}"
    base = [f"--kubeconfig={kubeconfig}", "-n", ns, "--set", "crds.enabled=false",
            "--timeout", "60s"]
    try:
        helm.run("install", release, str(CHART), "--create-namespace", *base)
        status = json.loads(helm.run("status", release, "-o", "json", *base[:3]).stdout)
        assert status["info"]["status"] == "deployed"
        names = kubectl(kubeconfig, "get", "deploy,ds,sa,secret,svc,role,rolebinding", "-n",
                        ns, "-o", "name").stdout.split()
        prefix = f"{release}-vmresize"
        for expected in (f"deployment.apps/{prefix}-operator", f"daemonset.apps/{prefix}-agent",
                         f"serviceaccount/{prefix}-operator", f"serviceaccount/{prefix}-agent",
                         f"secret/{prefix}-migration-key", f"service/{prefix}-operator-metrics"):
            assert expected in names
        key = _secret_key(kubeconfig, ns, f"{prefix}-migration-key")
        imported = asyncssh.import_private_key(key)
        assert imported.get_algorithm() == "ssh-ed25519"

        helm.run("upgrade", release, str(CHART), *base,
                 "--set", "operator.settings.maxAttempts=5")
        assert _secret_key(kubeconfig, ns, f"{prefix}-migration-key") == key
        env = kubectl(kubeconfig, "get", "deploy", f"{prefix}-operator", "-n", ns, "-o",
                      "jsonpath={.spec.template.spec.containers[0].env}").stdout
        assert {"name": "VMRESIZE_MAX_ATTEMPTS", "value": "5"} in json.loads(env)
    finally:
        helm.run("uninstall", release, *base[:3], "--wait", "--timeout", "60s", check=False)
        kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false", check=False)
    left = kubectl(kubeconfig, "get", "clusterroles,validatingadmissionpolicies", "-o",
                   "name").stdout
    assert release not in left


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[Path]:
    """A control plane of its own, for the chart's own CRDs (the session's are kubectl's)."""
    cluster = LocalCluster(tmp_path / "cluster").start()
    try:
        yield cluster.kubeconfig
    finally:
        cluster.stop()


def test_install_with_crds_keep_and_peering(helm: Helm, private_cluster: Path) -> None:
    config = private_cluster
    base = [f"--kubeconfig={config}", "-n", "vmresize-system", "--timeout", "60s"]
    helm.run("install", "vmresize", str(CHART), "--create-namespace", *base)
    crds = [p.name.removesuffix(".yaml") for p in (REPO / "crds").glob("*.yaml")]
    kubectl(config, "wait", "--for=condition=Established", "--timeout=60s",
            *[f"crd/{c}" for c in crds])
    # HA: kopf's peering CRD comes with the upgrade, the peering object with its hook.
    helm.run("upgrade", "vmresize", str(CHART), *base, "--set", "operator.replicaCount=2")
    peering = json.loads(kubectl(config, "get", "clusterkopfpeering", "vmresize-operator",
                                 "-o", "json").stdout)
    assert peering["kind"] == "ClusterKopfPeering"
    args = kubectl(config, "get", "deploy", "vmresize-operator", "-n", "vmresize-system", "-o",
                   "jsonpath={.spec.template.spec.containers[0].args}").stdout
    assert "--peering=vmresize-operator" in json.loads(args)
    helm.run("uninstall", "vmresize", *base[:3], "--wait", "--timeout", "60s")
    # crds.keep: the CRDs (and so every user object) outlive the release.
    left = kubectl(config, "get", "crd", "-o", "name").stdout.split()
    for c in crds:
        assert f"customresourcedefinition.apiextensions.k8s.io/{c}" in left
    assert kubectl(config, "get", "deploy", "-n", "vmresize-system", "-o",
                   "name").stdout.strip() == ""


# --- the chart and the code agree ----------------------------------------------------------


def _container_env(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    c = find(docs, kind)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in c["env"]}


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_chart_env_is_the_settings_models(helm: Helm, kind: str) -> None:
    """Every VMRESIZE_* variable the chart sets is a field of the process's model, and every
    field is set unless hack/settingsgen.py's wiring says the chart leaves it unset."""
    from hack.settingsgen import WIRING

    from vmresize.agent.settings import AgentSettings
    from vmresize.operator.settings import Settings

    model = Settings if kind == "Deployment" else AgentSettings
    env = _container_env(helm.template(), kind)
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
    env = {n: e["value"] for n, e in _container_env(docs, "Deployment").items() if "value" in e}
    assert Settings.from_env(env) == Settings.from_env({
        "VMRESIZE_NAMESPACE": "vmresize-system", "VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST": "1",
        "VMRESIZE_AUTO_CONFIRM_SECONDS": "600", "VMRESIZE_MAX_ATTEMPTS": "4",
        "VMRESIZE_TASK_RETRIES": "7", "VMRESIZE_HEARTBEAT_STALE_SECONDS": "30.5",
        "VMRESIZE_RAM_WEIGHT_MULTIPLIER": "2", "VMRESIZE_CPU_WEIGHT_MULTIPLIER": "-1",
        "VMRESIZE_DISK_WEIGHT_MULTIPLIER": "0.5", "VMRESIZE_POLL_SECONDS": "2.5",
        "VMRESIZE_PEERING_LIFETIME_SECONDS": "20", "VMRESIZE_METRICS_PORT": "9000"})
    docs = helm.template("--set", "operator.metrics.enabled=false")
    env = {n: e["value"] for n, e in _container_env(docs, "Deployment").items() if "value" in e}
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
