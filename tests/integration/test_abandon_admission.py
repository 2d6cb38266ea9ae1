"""``spec.abandonDestination`` is an admin's act (issue 18, finding 6), on the real API
server with the chart installed: the chart's ValidatingAdmissionPolicy denies a tenant,
and the CRD's CEL rules make it one-way and accept it only while the resize waits on its
destination (Finishing, Reverting, RollingBack), never on create."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.chart import Release, eventually
from tests.support.kube import kubectl

from vmresize.api.meta import API_VERSION

RESIZE = f"apiVersion: {API_VERSION}\n" + """kind: VMResize
metadata:
  name: {name}
  namespace: {namespace}
spec:
  instanceName: web-1
  flavor: m1.small
{extra}"""
AS_ALICE = ("--as=alice", "--as-group=developers")
ABANDON = json.dumps({"spec": {"abandonDestination": True}})


@pytest.fixture
def tenant(release: Release, namespace: str) -> str:
    """``namespace``, where "alice" may create and patch VMResizes (RBAC is not what denies)."""
    kubectl(release.config, "create", "role", "resizer", "-n", namespace,
            "--verb=create,get,list,patch,delete", "--resource=vmresizes.vmresize.io")
    kubectl(release.config, "create", "rolebinding", "alice-resizer", "-n", namespace,
            "--role=resizer", "--user=alice")
    return namespace


def _in_phase(admin: Path, ns: str, name: str, phase: str) -> None:
    kubectl(admin, "create", "-f", "-", stdin=RESIZE.format(name=name, namespace=ns, extra=""))
    kubectl(admin, "patch", "vmresize", name, "-n", ns, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"phase": phase}}))


def test_abandoning_the_destination_is_an_admins_act(release: Release, tenant: str) -> None:
    admin = release.config
    _in_phase(admin, tenant, "stuck", "Finishing")
    denied = eventually(
        lambda: kubectl(admin, "patch", "vmresize", "stuck", "-n", tenant, *AS_ALICE,
                        "--type=merge", "-p", ABANDON, check=False),
        lambda r: r.returncode != 0 and "abandon-destination" in r.stderr)
    assert denied.returncode != 0, denied.stdout
    assert "ValidatingAdmissionPolicy" in denied.stderr
    assert "only an admin may do" in denied.stderr
    assert 'user "alice" is not in the groups system:masters' in denied.stderr
    got = kubectl(admin, "get", "vmresize", "stuck", "-n", tenant, "-o",
                  "jsonpath={.spec.abandonDestination}").stdout
    assert got in ("", "false")

    kubectl(admin, "patch", "vmresize", "stuck", "-n", tenant, "--type=merge", "-p", ABANDON)
    # One-way: not even an admin takes it back.
    back = kubectl(admin, "patch", "vmresize", "stuck", "-n", tenant, "--type=merge", "-p",
                   json.dumps({"spec": {"abandonDestination": False}}), check=False)
    assert back.returncode != 0
    assert "abandonDestination cannot be set back to false" in back.stderr
    # The tenant still edits the rest of an abandoned resize as before (the policy guards
    # only the turn to true).
    kubectl(admin, "annotate", "vmresize", "stuck", "-n", tenant, *AS_ALICE, "note=ok")
    kubectl(admin, "delete", "vmresize", "stuck", "-n", tenant, "--wait=false")


@pytest.mark.parametrize("phase", ["VerifyResize", "Migrating", "RolledBack"])
def test_only_while_waiting_on_the_destination(release: Release, tenant: str,
                                               phase: str) -> None:
    admin = release.config
    name = f"w-{phase.lower()}"
    _in_phase(admin, tenant, name, phase)
    refused = kubectl(admin, "patch", "vmresize", name, "-n", tenant, "--type=merge", "-p",
                      ABANDON, check=False)
    assert refused.returncode != 0
    assert ("spec.abandonDestination is accepted only while the resize waits on its "
            f"destination (Finishing, Reverting, RollingBack); it is {phase}") in refused.stderr
    kubectl(admin, "delete", "vmresize", name, "-n", tenant, "--wait=false")


def test_never_on_create(release: Release, tenant: str) -> None:
    made = kubectl(release.config, "create", "-f", "-", check=False, stdin=RESIZE.format(
        name="born", namespace=tenant, extra="  abandonDestination: true\n"))
    assert made.returncode != 0
    assert "it is Pending" in made.stderr
