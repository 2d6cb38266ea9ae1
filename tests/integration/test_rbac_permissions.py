"""The chart's least-privilege RBAC, on the real API server.

One release of deploy/helm/vmresize is installed into its own namespace of the session
cluster (the ``release`` fixture; crds.enabled=false: the session applied crds/ already).
``kubectl auth can-i --as=<ServiceAccount>`` proves what each component may and may not
do, and a real token of the agent's ServiceAccount reads the migration key and nothing else.
The admission policies are in test_rbac_admission, real processes in test_rbac_processes.
"""

from __future__ import annotations

import base64
from pathlib import Path

from tests.support.chart import Release, token_kubeconfig
from tests.support.kube import kubectl


def test_agent_may_not_write_vmresizes_or_instances(release: Release) -> None:
    for verb in ("update", "patch", "create", "delete"):
        assert not release.can(release.agent, verb, "vmresizes.vmresize.io", "-A")
        assert not release.can(release.agent, verb, "instances.vmresize.io", "-A")
    assert not release.can(release.agent, "patch", "vmresizes.vmresize.io", "--subresource=status",
                           "-A")
    # The fence reads a task's owner before a destructive step: get, and nothing more.
    for kind in ("vmresizes.vmresize.io", "instances.vmresize.io"):
        assert release.can(release.agent, "get", kind, "-A")
        assert not release.can(release.agent, "list", kind, "-A")


def test_agent_reads_only_the_migration_key(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert release.can(release.agent, "get", f"secret/{release.key_secret}", *ns)
    assert not release.can(release.agent, "get", "secret/some-other-secret", *ns)
    assert not release.can(release.agent, "list", "secrets", *ns)
    assert not release.can(release.agent, "watch", "secrets", *ns)
    assert not release.can(release.agent, "get", f"secret/{release.key_secret}", "-n", "default")
    assert not release.can(release.agent, "update", f"secret/{release.key_secret}", *ns)


def test_agent_host_and_task_verbs(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert release.can(release.agent, "create", "hosts.vmresize.io")
    assert release.can(release.agent, "watch", "hosts.vmresize.io")
    assert release.can(release.agent, "patch", "hosts.vmresize.io", "--subresource=status")
    assert not release.can(release.agent, "delete", "hosts.vmresize.io")
    assert not release.can(release.agent, "update", "hosts.vmresize.io")
    assert release.can(release.agent, "watch", "hosttasks.vmresize.io", *ns)
    assert release.can(release.agent, "patch", "hosttasks.vmresize.io", "--subresource=status",
                       *ns)
    assert not release.can(release.agent, "create", "hosttasks.vmresize.io", *ns)
    assert not release.can(release.agent, "delete", "hosttasks.vmresize.io", *ns)
    assert not release.can(release.agent, "patch", "hosttasks.vmresize.io", "-n", "default")
    assert not release.can(release.agent, "create", "flavors.vmresize.io")


def test_operator_may_not_read_the_migration_key(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert not release.can(release.operator, "get", f"secret/{release.key_secret}", *ns)
    assert not release.can(release.operator, "list", "secrets", *ns)
    assert not release.can(release.operator, "list", "secrets", "-A")


def test_operator_drives_resizes_and_owns_hosttasks(release: Release) -> None:
    ns = ["-n", release.namespace]
    assert release.can(release.operator, "patch", "vmresizes.vmresize.io", "--subresource=status",
                       "-A")
    assert release.can(release.operator, "patch", "instances.vmresize.io", "-A")
    assert release.can(release.operator, "patch", "hosts.vmresize.io", "--subresource=status")
    assert not release.can(release.operator, "delete", "hosts.vmresize.io")
    assert not release.can(release.operator, "delete", "vmresizes.vmresize.io", "-A")
    for verb in ("create", "delete", "patch", "watch"):
        assert release.can(release.operator, verb, "hosttasks.vmresize.io", *ns)
    assert not release.can(release.operator, "create", "hosttasks.vmresize.io", "-n", "default")
    assert not release.can(release.operator, "patch", "hosttasks.vmresize.io", "-A")
    assert release.can(release.operator, "watch", "hosttasks.vmresize.io", "-A")  # kopf -A
    assert release.can(release.operator, "create", "events", "-n", "default")


def test_operator_keeps_the_quota_ledger_but_not_the_limits(release: Release) -> None:
    op = release.operator
    assert release.can(op, "watch", "vmquotas.vmresize.io", "-A")
    assert release.can(op, "update", "vmquotas.vmresize.io", "--subresource=status", "-A")
    for verb in ("create", "patch", "update", "delete"):   # spec.hard is the admin's
        assert not release.can(op, verb, "vmquotas.vmresize.io", "-A")


def test_operator_carries_out_host_drains(release: Release) -> None:
    """A HostDrain (issue 21): the operator disables the Host (a patch of its spec) and
    moves each instance with a VMResize it creates in the instance's namespace; it never
    creates or deletes a drain, which is the admin's."""
    assert release.can(release.operator, "patch", "hosts.vmresize.io")
    assert release.can(release.operator, "create", "vmresizes.vmresize.io", "-A")
    assert release.can(release.operator, "patch", "hostdrains.vmresize.io",
                       "--subresource=status")
    assert release.can(release.operator, "watch", "hostdrains.vmresize.io")
    assert not release.can(release.operator, "create", "hostdrains.vmresize.io")
    assert not release.can(release.operator, "delete", "hostdrains.vmresize.io")


def test_agent_token_reads_the_migration_key_and_nothing_else(release: Release,
                                                               tmp_path: Path) -> None:
    token = kubectl(release.config, "create", "token", release.agent, "-n", release.namespace,
                    "--duration=10m").stdout.strip()
    agent = token_kubeconfig(release.config, token, tmp_path / "agent.kubeconfig")
    got = kubectl(agent, "get", "secret", release.key_secret, "-n", release.namespace, "-o",
                  "jsonpath={.data.id_ed25519}").stdout
    assert base64.b64decode(got).startswith(b"-----BEGIN PRIVATE KEY-----")
    denied = kubectl(agent, "get", "secrets", "-n", release.namespace, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
