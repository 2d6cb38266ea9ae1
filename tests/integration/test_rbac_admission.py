"""The chart's ValidatingAdmissionPolicies, on the real API server.

One release of deploy/helm/vmresize per module (the ``release`` fixture). Real
ServiceAccount tokens, some bound to a Node object, write through the agent-host-scope
policy; impersonated users create VMResizes with spec.targetHost against the forced-host
policy.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.support.chart import HOST, Release, eventually, token_kubeconfig
from tests.support.kube import kubectl

from vmresize.api.meta import API_VERSION

TASK = f"apiVersion: {API_VERSION}\n" + """kind: HostTask
metadata:
  name: {name}
  namespace: {namespace}
spec:
  host: {host}
  action: Prepare
  owner: tenant/web-1-resize
  instance: tenant/web-1
"""


def test_node_bound_agent_writes_only_its_own_host_and_tasks(
        release: Release, nodes: tuple[str, str], tmp_path: Path) -> None:
    own, other = nodes
    admin, ns = release.config, release.namespace
    token = kubectl(admin, "create", "token", release.agent, "-n", ns, "--duration=10m",
                    "--bound-object-kind=Node", f"--bound-object-name={own}").stdout.strip()
    agent = token_kubeconfig(admin, token, tmp_path / "agent.kubeconfig")
    whoami = json.loads(kubectl(agent, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"] == [own]

    # Registering another node's Host is denied by the policy (RBAC alone would allow it).
    def register_other() -> subprocess.CompletedProcess[str]:
        r = kubectl(agent, "create", "-f", "-", stdin=HOST.format(name=other), check=False)
        if r.returncode == 0:  # the policy was not in force yet: undo it, and try again
            kubectl(admin, "delete", "host", other, "--wait=true")
        return r

    denied = eventually(register_other,
                        lambda r: r.returncode != 0 and "agent-host-scope" in r.stderr)
    assert denied.returncode != 0
    assert f'the agent on node "{own}" may not write Host "{other}"' in denied.stderr
    kubectl(agent, "create", "-f", "-", stdin=HOST.format(name=own))

    status = json.dumps({"status": {"ready": True}})
    kubectl(agent, "patch", "host", own, "--subresource=status", "--type=merge", "-p", status)
    kubectl(admin, "create", "-f", "-", stdin=HOST.format(name=other))
    denied = kubectl(agent, "patch", "host", other, "--subresource=status", "--type=merge",
                     "-p", status, check=False)
    assert denied.returncode != 0
    assert "agent-host-scope" in denied.stderr

    mine, theirs = f"t-{own}", f"t-{other}"
    for name, host in ((mine, own), (theirs, other)):
        kubectl(admin, "create", "-f", "-", stdin=TASK.format(name=name, namespace=ns, host=host))
    progress = json.dumps({"status": {"message": "working"}})
    kubectl(agent, "patch", "hosttask", mine, "-n", ns, "--subresource=status", "--type=merge",
            "-p", progress)
    denied = kubectl(agent, "patch", "hosttask", theirs, "-n", ns, "--subresource=status",
                     "--type=merge", "-p", progress, check=False)
    assert denied.returncode != 0
    assert f'may not write HostTask "{theirs}"' in denied.stderr
    message = kubectl(admin, "get", "hosttask", theirs, "-n", ns, "-o",
                      "jsonpath={.status.message}").stdout
    assert message != "working"

    # A token without a node binding carries no node name: the policy does not apply, and
    # only RBAC (and the agent's own check) stand. This is the documented limitation.
    unbound = token_kubeconfig(admin, kubectl(admin, "create", "token", release.agent, "-n", ns,
                                              "--duration=10m").stdout.strip(),
                               tmp_path / "unbound.kubeconfig")
    kubectl(unbound, "patch", "hosttask", theirs, "-n", ns, "--subresource=status",
            "--type=merge", "-p", progress)


FORCED = f"apiVersion: {API_VERSION}\n" + """kind: VMResize
metadata:
  name: {name}
  namespace: {namespace}
spec:
  instanceName: web-1
  flavor: m1.small
{extra}"""


@pytest.fixture
def tenant(release: Release, namespace: str) -> str:
    """``namespace``, where the user "alice" may create VMResizes (RBAC is not what denies)."""
    kubectl(release.config, "create", "role", "resizer", "-n", namespace,
            "--verb=create,get,list,patch,delete", "--resource=vmresizes.vmresize.io")
    kubectl(release.config, "create", "rolebinding", "alice-resizer", "-n", namespace,
            "--role=resizer", "--user=alice")
    return namespace


def test_forced_host_is_an_admins_act(release: Release, tenant: str) -> None:
    admin = release.config
    forced = FORCED.format(name="forced", namespace=tenant, extra="  targetHost: hv-2\n")
    as_alice = ("--as=alice", "--as-group=developers")

    denied = eventually(
        lambda: kubectl(admin, "create", "-f", "-", *as_alice, stdin=forced, check=False),
        lambda r: r.returncode != 0 and "forced-host" in r.stderr)
    assert denied.returncode != 0
    assert "ValidatingAdmissionPolicy" in denied.stderr
    assert 'user "alice" is not in the groups system:masters' in denied.stderr
    assert kubectl(admin, "get", "vmresize", "forced", "-n", tenant, check=False).returncode != 0

    # alice may create resizes that leave the host to the scheduler.
    plain = FORCED.format(name="plain", namespace=tenant, extra="")
    kubectl(admin, "create", "-f", "-", *as_alice, stdin=plain)

    # An admin (system:masters, the admin kubeconfig's group) may force a host.
    kubectl(admin, "create", "-f", "-", stdin=forced)
    got = kubectl(admin, "get", "vmresize", "forced", "-n", tenant, "-o",
                  "jsonpath={.spec.targetHost}").stdout
    assert got == "hv-2"
    # The policy guards CREATE only; the tenant still drives an admin-forced resize (once
    # it waits in VerifyResize, where confirm is accepted)...
    kubectl(admin, "patch", "vmresize", "forced", "-n", tenant, "--subresource=status",
            "--type=merge", "-p", '{"status":{"phase":"VerifyResize"}}')
    kubectl(admin, "patch", "vmresize", "forced", "-n", tenant, *as_alice, "--type=merge",
            "-p", '{"spec":{"confirm":true}}')
    # ...and cannot force a host later: spec.targetHost is immutable, absence included.
    late = kubectl(admin, "patch", "vmresize", "plain", "-n", tenant, *as_alice,
                   "--type=merge", "-p", '{"spec":{"targetHost":"hv-2"}}', check=False)
    assert late.returncode != 0
    assert "targetHost is immutable" in late.stderr
    kubectl(admin, "delete", "vmresize", "forced", "plain", "-n", tenant, "--wait=false")
