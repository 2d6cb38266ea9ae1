"""Tenants use vmresize with nothing but Kubernetes' built-in view and edit roles.

The chart's tenantRBAC ClusterRoles carry the aggregate-to-view/edit/admin labels, and the
session cluster's kube-controller-manager (clusterrole-aggregation controller) folds them
into the built-in ``view``, ``edit`` and ``admin``. One release is installed; before it,
``edit`` grants nothing in vmresize.io (so what follows is the release's doing). Then
impersonated users act on the real API server:

- "alice", bound to ``edit`` in her namespace by a RoleBinding, creates an Instance and a
  VMResize there and confirms it; she reads Flavors and Hosts (the catalog-reader binding
  to system:authenticated, since a RoleBinding never grants cluster-scoped objects);
- "bob", bound to ``view``, reads them but cannot create or patch;
- neither may write status, HostTasks, Hosts or Flavors, nor act outside the namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hack.localcluster import ensure_binaries
from tests.support.chart import CHART, Release, eventually
from tests.support.kube import kubectl

TIMEOUT = 120  # seconds for one helm or kubectl call, as in the other chart tests

#: The aggregation controller reacts to a ClusterRole event within a second or so; this
#: bounds it on a loaded machine, it is not a timing check.
AGGREGATION_SECONDS = 60.0
GROUP = "vmresize.io"

INSTANCE = """apiVersion: vmresize.io/v1alpha1
kind: Instance
metadata:
  name: {name}
  namespace: {namespace}
spec:
  flavor: m1.tiny
"""

RESIZE = """apiVersion: vmresize.io/v1alpha1
kind: VMResize
metadata:
  name: {name}
  namespace: {namespace}
spec:
  instanceName: {instance}
  flavor: m1.small
"""

HOSTTASK = """apiVersion: vmresize.io/v1alpha1
kind: HostTask
metadata:
  name: {name}
  namespace: {namespace}
spec:
  host: hv-1
  action: Prepare
  owner: {namespace}/r
  instance: {namespace}/vm
"""


def wait_until(what: str, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + AGGREGATION_SECONDS
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {AGGREGATION_SECONDS:.0f} s: {what}")
        time.sleep(0.5)


def vmresize_rules(config: Path, clusterrole: str) -> list[dict[str, Any]]:
    """The rules of ``clusterrole`` that name the vmresize.io API group."""
    doc = json.loads(kubectl(config, "get", "clusterrole", clusterrole, "-o", "json").stdout)
    return [r for r in doc.get("rules") or [] if GROUP in r.get("apiGroups", [])]


@pytest.fixture(scope="module")
def release(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """One helm release (defaults: aggregation on, catalog readable by all authenticated),
    installed once the built-in roles hold no vmresize.io rule left from an earlier one."""
    for role in ("view", "edit", "admin"):
        wait_until(f"built-in {role} without vmresize.io rules (another release installed?)",
                   lambda role=role: not vmresize_rules(kubeconfig, role))
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "c"), "HELM_CACHE_HOME": str(home / "k"),
           "HELM_DATA_HOME": str(home / "d")}
    helm = str(ensure_binaries() / "helm")
    rel = Release(f"r{uuid.uuid4().hex[:8]}", f"vmresize-{uuid.uuid4().hex[:8]}", kubeconfig)
    common = [f"--kubeconfig={kubeconfig}", "-n", rel.namespace]
    try:
        subprocess.run([helm, "install", rel.name, str(CHART), *common, "--create-namespace",
                        "--set", "crds.enabled=false", "--timeout", "60s"],
                       check=True, capture_output=True, text=True, env=env, timeout=TIMEOUT)
        yield rel
    finally:
        subprocess.run([helm, "uninstall", rel.name, *common, "--wait", "--timeout", "60s"],
                       capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False)
        kubectl(kubeconfig, "delete", "namespace", rel.namespace, "--wait=false", check=False)


class User:
    """An impersonated user (the admin kubeconfig with --as)."""

    def __init__(self, config: Path, name: str) -> None:
        self.config = config
        self.name = name

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(self.config, f"--as={self.name}", *args, stdin=stdin, check=False)

    def can(self, *args: str) -> bool:
        answer = self.kubectl("auth", "can-i", *args).stdout.strip()
        assert answer in ("yes", "no"), args
        return answer == "yes"

    def denied(self, *args: str, stdin: str | None = None) -> None:
        """The request is refused by RBAC (not by validation or a missing object)."""
        proc = self.kubectl(*args, stdin=stdin)
        assert proc.returncode != 0, f"{self.name} was allowed: kubectl {' '.join(args)}"
        assert "forbidden" in proc.stderr.lower(), proc.stderr
        assert f'User "{self.name}"' in proc.stderr, proc.stderr

    def ok(self, *args: str, stdin: str | None = None) -> str:
        proc = self.kubectl(*args, stdin=stdin)
        assert proc.returncode == 0, f"{self.name}: kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout


@dataclass(frozen=True)
class Tenant:
    alice: User  # edit in the namespace
    bob: User  # view in the namespace
    host: str  # a Host the admin made


@pytest.fixture
def tenant(release: Release, namespace: str) -> Iterator[Tenant]:
    """alice (edit) and bob (view) in ``namespace``, once the aggregation shows; a Host
    made by the admin, for them to fail to change."""
    admin = release.config
    kubectl(admin, "create", "rolebinding", "alice-edit", "-n", namespace, "--clusterrole=edit",
            "--user=alice")
    kubectl(admin, "create", "rolebinding", "bob-view", "-n", namespace, "--clusterrole=view",
            "--user=bob")
    alice, bob = User(admin, "alice"), User(admin, "bob")
    wait_until("edit aggregates the chart's edit role",
               lambda: alice.can("create", f"vmresizes.{GROUP}", "-n", namespace))
    wait_until("view aggregates the chart's view role",
               lambda: bob.can("list", f"instances.{GROUP}", "-n", namespace))
    host = f"hv-{uuid.uuid4().hex[:6]}"
    kubectl(admin, "create", "-f", "-",
            stdin=f"apiVersion: {GROUP}/v1alpha1\nkind: Host\nmetadata:\n  name: {host}\n"
                  "spec: {}\n")
    yield Tenant(alice, bob, host)
    kubectl(admin, "delete", "host", host, "--wait=false", check=False)


def test_editor_creates_an_instance_and_a_resize_and_confirms(
        release: Release, namespace: str, tenant: Tenant) -> None:
    alice = tenant.alice
    ns = ["-n", namespace]
    alice.ok("create", "-f", "-", stdin=INSTANCE.format(name="vm1", namespace=namespace))
    alice.ok("create", "-f", "-",
             stdin=RESIZE.format(name="r1", namespace=namespace, instance="vm1"))
    # No operator runs here: the admin plays it and puts the resize in VerifyResize, the
    # only phase that accepts confirm.
    kubectl(release.config, "patch", "vmresize", "r1", *ns, "--subresource=status",
            "--type=merge", "-p", '{"status":{"phase":"VerifyResize"}}')
    alice.ok("patch", "vmresize", "r1", *ns, "--type=merge", "-p", '{"spec":{"confirm":true}}')
    assert alice.ok("get", "vmresize", "r1", *ns, "-o", "jsonpath={.spec.confirm}") == "true"
    assert "vm1" in alice.ok("get", "instances", *ns, "-o", "name")
    # The catalog: cluster-scoped, readable through the catalog-reader binding.
    alice.ok("get", "flavors")
    alice.ok("get", "hosts")
    # Status is the operator's; so are HostTasks, Hosts and Flavors.
    alice.denied("patch", "vmresize", "r1", *ns, "--subresource=status", "--type=merge",
                 "-p", '{"status":{"phase":"Confirmed"}}')
    alice.denied("create", "-f", "-", stdin=HOSTTASK.format(name="t1", namespace=namespace))
    alice.denied("patch", "host", tenant.host, "--type=merge",
                 "-p", '{"spec":{"unschedulable":true}}')
    alice.denied("create", "-f", "-", stdin=f"apiVersion: {GROUP}/v1alpha1\nkind: Flavor\n"
                 "metadata:\n  name: mine\nspec:\n  vcpus: 1\n  memoryMiB: 64\n  diskGiB: 1\n")
    # Only in her namespace.
    alice.denied("create", "-f", "-",
                 stdin=INSTANCE.format(name="vm2", namespace=release.namespace))
    alice.ok("delete", "vmresize", "r1", *ns, "--wait=false")


def test_viewer_reads_but_cannot_write(release: Release, namespace: str,
                                       tenant: Tenant) -> None:
    alice, bob = tenant.alice, tenant.bob
    ns = ["-n", namespace]
    alice.ok("create", "-f", "-", stdin=INSTANCE.format(name="vm1", namespace=namespace))
    alice.ok("create", "-f", "-",
             stdin=RESIZE.format(name="r1", namespace=namespace, instance="vm1"))
    assert bob.ok("get", "vmresize", "r1", *ns, "-o", "jsonpath={.spec.instanceName}") == "vm1"
    assert "vm1" in bob.ok("get", "instances", *ns, "-o", "name")
    bob.ok("get", "flavors")
    bob.denied("create", "-f", "-", stdin=INSTANCE.format(name="vm2", namespace=namespace))
    bob.denied("patch", "vmresize", "r1", *ns, "--type=merge", "-p", '{"spec":{"confirm":true}}')
    bob.denied("delete", "instance", "vm1", *ns)
    bob.denied("create", "-f", "-", stdin=HOSTTASK.format(name="t1", namespace=namespace))
    bob.denied("patch", "host", tenant.host, "--type=merge",
               "-p", '{"spec":{"unschedulable":true}}')
    alice.ok("delete", "vmresize", "r1", *ns, "--wait=false")


def test_neither_may_write_hosttasks_hosts_or_status(release: Release, namespace: str,
                                                     tenant: Tenant) -> None:
    for user in (tenant.alice, tenant.bob):
        for verb in ("create", "update", "patch", "delete", "deletecollection"):
            assert not user.can(verb, f"hosttasks.{GROUP}", "-n", namespace)
            assert not user.can(verb, f"hosttasks.{GROUP}", "-n", release.namespace)
            assert not user.can(verb, f"hosts.{GROUP}")
            assert not user.can(verb, f"flavors.{GROUP}")
        for kind in ("instances", "vmresizes", "hosttasks"):
            assert not user.can("patch", f"{kind}.{GROUP}", "--subresource=status", "-n",
                                namespace)
        for kind in ("instances", "vmresizes"):
            assert not user.can("patch", f"{kind}.{GROUP}", "--subresource=finalizers", "-n",
                                namespace)
        assert not user.can("patch", f"hosts.{GROUP}", "--subresource=status")
        assert user.can("watch", f"hosts.{GROUP}")
        assert user.can("watch", f"flavors.{GROUP}")
        # A RoleBinding in one namespace reaches no other.
        assert not user.can("list", f"instances.{GROUP}", "-n", release.namespace)


QUOTA = """apiVersion: vmresize.io/v1alpha1
kind: VMQuota
metadata:
  name: {name}
  namespace: {namespace}
spec:
  hard:
    instances: {instances}
    vcpus: 8
"""


def test_tenants_read_their_quota_but_cannot_change_it(release: Release, namespace: str,
                                                       tenant: Tenant) -> None:
    admin, ns = release.config, ["-n", namespace]
    kubectl(admin, "create", "-f", "-",
            stdin=QUOTA.format(name="q", namespace=namespace, instances=0))
    for user in (tenant.alice, tenant.bob):
        assert user.ok("get", "vmquota", "q", *ns, "-o", "jsonpath={.spec.hard.vcpus}") == "8"
        user.ok("get", "vmquotas", *ns)
        user.denied("patch", "vmquota", "q", *ns, "--type=merge",
                    "-p", '{"spec":{"hard":{"vcpus":800}}}')
        user.denied("delete", "vmquota", "q", *ns)
        user.denied("create", "-f", "-",
                    stdin=QUOTA.format(name="mine", namespace=namespace, instances=99))
        for verb in ("create", "update", "patch", "delete", "deletecollection"):
            assert not user.can(verb, f"vmquotas.{GROUP}", *ns)
        assert not user.can("patch", f"vmquotas.{GROUP}", "--subresource=status", *ns)
    # The chart's admission policy judges the count alone: no instance left, refused at
    # once, naming the limit (the operator refuses what it cannot judge).
    refused = eventually(
        lambda: tenant.alice.kubectl("create", "-f", "-",
                                     stdin=INSTANCE.format(name="vm1", namespace=namespace)),
        lambda r: r.returncode != 0 and "QuotaExceeded" in r.stderr)
    assert "VMQuota q would be exceeded (instances: 0 used + 1 asked > 0 allowed)" \
        in refused.stderr, refused.stderr
    kubectl(admin, "patch", "vmquota", "q", *ns, "--type=merge",
            "-p", '{"spec":{"hard":{"instances":1}}}')
    made = eventually(lambda: tenant.alice.kubectl(
        "create", "-f", "-", stdin=INSTANCE.format(name="vm1", namespace=namespace)),
        lambda r: r.returncode == 0)
    assert made.returncode == 0, made.stderr


OPERATOR_FINALIZER = "operator.vmresize.io/finalizer"


def test_only_the_operator_removes_its_finalizer(release: Release, namespace: str,
                                                 tenant: Tenant) -> None:
    """Issue 18, finding 3: an editor deleted a resize and then took the operator's
    finalizer off it, so its rollback never ran. The chart's operator-finalizer policy
    refuses that removal to everyone but the operator's ServiceAccount."""
    alice, admin = tenant.alice, release.config
    ns = ["-n", namespace]
    alice.ok("create", "-f", "-", stdin=INSTANCE.format(name="vm1", namespace=namespace))
    alice.ok("create", "-f", "-",
             stdin=RESIZE.format(name="r1", namespace=namespace, instance="vm1"))
    # No operator runs here: the admin puts its finalizer where kopf would.
    fin = json.dumps({"metadata": {"finalizers": [OPERATOR_FINALIZER]}})
    for kind in ("instance/vm1", "vmresize/r1"):
        kubectl(admin, "patch", kind, *ns, "--type=merge", "-p", fin)
    alice.ok("delete", "vmresize", "r1", *ns, "--wait=false")
    strip = json.dumps({"metadata": {"finalizers": None}})

    denied = eventually(lambda: alice.kubectl("patch", "vmresize", "r1", *ns, "--type=merge",
                                              "-p", strip),
                        lambda r: r.returncode != 0 and "operator-finalizer" in r.stderr)
    assert denied.returncode != 0, "alice removed the operator's finalizer"
    assert "ValidatingAdmissionPolicy" in denied.stderr
    assert ("only the vmresize operator removes operator.vmresize.io/finalizer (it rolls "
            'the resize back first): user "alice" may not') in denied.stderr
    assert OPERATOR_FINALIZER in alice.ok("get", "vmresize", "r1", *ns, "-o",
                                          "jsonpath={.metadata.finalizers}")
    # Nor from an Instance, nor by a JSON patch that removes just that entry.
    assert "operator-finalizer" in alice.kubectl(
        "patch", "instance", "vm1", *ns, "--type=json",
        "-p", '[{"op":"remove","path":"/metadata/finalizers/0"}]').stderr
    # Another ServiceAccount of the cluster is no operator either.
    other = f"--as=system:serviceaccount:{namespace}:default"
    kubectl(admin, "create", "rolebinding", "default-edit", *ns, "--clusterrole=edit",
            f"--serviceaccount={namespace}:default")
    wait_until("default's edit binding", lambda: kubectl(
        admin, "auth", "can-i", "patch", f"vmresizes.{GROUP}", *ns, other,
        check=False).stdout.strip() == "yes")
    sa = kubectl(admin, "patch", "vmresize", "r1", *ns, other, "--type=merge", "-p", strip,
                 check=False)
    assert sa.returncode != 0
    assert "operator-finalizer" in sa.stderr
    # Her other edits still go through, finalizers of her own included.
    mine = json.dumps({"metadata": {"finalizers": [OPERATOR_FINALIZER, "example.com/mine"]}})
    alice.ok("patch", "instance", "vm1", *ns, "--type=merge", "-p", mine)
    alice.ok("patch", "instance", "vm1", *ns, "--type=merge", "-p", fin)
    # The operator's ServiceAccount removes it, and the resize is gone...
    operator = f"--as={release.sa_user(release.operator)}"
    kubectl(admin, "patch", "vmresize", "r1", *ns, operator, "--type=merge", "-p", strip)
    assert kubectl(admin, "get", "vmresize", "r1", *ns, check=False).returncode != 0
    # ...and a cluster admin (system:masters, admission.operatorFinalizerGroups) may still
    # break the glass.
    kubectl(admin, "patch", "instance", "vm1", *ns, "--type=merge", "-p", strip)


def test_namespace_admin_gets_the_edit_rules_too(release: Release, namespace: str) -> None:
    admin = release.config
    kubectl(admin, "create", "rolebinding", "carol-admin", "-n", namespace,
            "--clusterrole=admin", "--user=carol")
    carol = User(admin, "carol")
    wait_until("admin aggregates the chart's roles",
               lambda: carol.can("create", f"instances.{GROUP}", "-n", namespace))
    assert carol.can("deletecollection", f"vmresizes.{GROUP}", "-n", namespace)
    assert not carol.can("create", f"hosttasks.{GROUP}", "-n", namespace)
