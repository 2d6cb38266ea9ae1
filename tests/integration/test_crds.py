"""The generated CRDs on a real kube-apiserver: Established, examples accepted, bad input
refused with a message that names the problem, and the documented printer columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import REPO
from tests.support.kube import kubectl

from vmresize.api.crdgen import KINDS
from vmresize.api.meta import API_VERSION, GROUP

EXAMPLES = REPO / "examples"


def _apply(kubeconfig: Path, ns: str, obj: dict[str, Any]) -> tuple[int, str]:
    proc = kubectl(kubeconfig, "apply", "-n", ns, "-f", "-", check=False,
                   stdin=json.dumps(obj))
    return proc.returncode, proc.stderr + proc.stdout


def test_every_crd_is_established(kubeconfig: Path) -> None:
    out = kubectl(kubeconfig, "get", "crd", "-o", "json").stdout
    ours = {c["metadata"]["name"]: c for c in json.loads(out)["items"]
            if c["spec"]["group"] == GROUP}
    assert set(ours) == {f"{k.plural}.{GROUP}" for k in KINDS}
    for name, crd in ours.items():
        established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
        assert [c["status"] for c in established] == ["True"], name


def test_examples_are_accepted(kubeconfig: Path, namespace: str) -> None:
    for f in sorted(EXAMPLES.glob("*.yaml")):
        proc = kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(f), check=False)
        assert proc.returncode == 0, f"{f.name}: {proc.stderr}"
    kubectl(kubeconfig, "delete", "-f", str(EXAMPLES / "hosts.yaml"), "-f",
            str(EXAMPLES / "flavors.yaml"), "--wait=false")


def flavor(**spec: Any) -> dict[str, Any]:
    base = {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}
    return {"apiVersion": API_VERSION, "kind": "Flavor",
            "metadata": {"name": "bad-flavor"}, "spec": {**base, **spec}}


def resize(name: str = "r1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "VMResize",
            "metadata": {"name": name}, "spec": {"instanceName": "web-1", **spec}}


def instance(name: str = "web-1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Instance",
            "metadata": {"name": name}, "spec": {"flavor": "m1.tiny", **spec}}


def host(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Host",
            "metadata": {"name": "bad-host"}, "spec": spec}


#: (id, object to create, what the error must say)
INVALID_ON_CREATE: list[tuple[str, dict[str, Any], str]] = [
    ("negative-vcpus", flavor(vcpus=-1), "spec.vcpus"),
    ("zero-memory", flavor(memoryMiB=0), "spec.memoryMiB"),
    ("zero-disk", flavor(diskGiB=0), "spec.diskGiB"),
    ("flavor-unknown-field", flavor(vpcus=2), 'unknown field "spec.vpcus"'),
    ("confirm-and-revert", resize(confirm=True, revert=True),
     "confirm and revert are mutually exclusive"),
    ("instance-name-slash", resize(instanceName="a/b"), "spec.instanceName"),
    ("instance-name-dotdot", resize(instanceName=".."), "spec.instanceName"),
    ("instance-name-traversal", resize(instanceName="../etc"), "spec.instanceName"),
    ("instance-name-uppercase", resize(instanceName="Web-1"), "spec.instanceName"),
    ("resize-missing-instance", {**resize(), "spec": {"flavor": "m1.small"}},
     "spec.instanceName: Required value"),
    ("resize-unknown-field", resize(flavour="m1.small"), 'unknown field "spec.flavour"'),
    ("negative-auto-confirm", resize(autoConfirmSeconds=-5), "spec.autoConfirmSeconds"),
    ("flavor-name-slash", resize(flavor="m1/small"), "spec.flavor"),
    ("instance-dotted-name", instance(name="web.1"), "metadata.name must be a DNS-1123 label"),
    ("instance-missing-flavor", {**instance(), "spec": {}}, "spec.flavor: Required value"),
    ("instance-image-traversal", instance(image={"baseImage": "../../etc/shadow"}),
     "spec.image.baseImage"),
    ("adopt-domain-slash", instance(host="hv-1", adopt={"domainName": "a/../b"}),
     "spec.adopt.domainName"),
    ("bridge-nic-without-source", instance(interfaces=[{"type": "bridge"}]),
     "a network or bridge interface names its source"),
    ("user-nic-with-source", instance(interfaces=[{"source": "br0"}]),
     "a network or bridge interface names its source"),
    ("multicast-mac", instance(interfaces=[{"mac": "01:00:5e:00:00:01"}]),
     "spec.interfaces[0].mac"),
    ("host-negative-ratio", host(allocationRatios={"cpu": -1}), "spec.allocationRatios.cpu"),
    ("host-negative-reserved", host(reserved={"memoryMiB": -512}),
     "spec.reserved.memoryMiB"),
]


@pytest.mark.parametrize(("case", "obj", "expected"), INVALID_ON_CREATE,
                         ids=[c[0] for c in INVALID_ON_CREATE])
def test_invalid_object_is_refused(kubeconfig: Path, namespace: str, case: str,
                                   obj: dict[str, Any], expected: str) -> None:
    code, err = _apply(kubeconfig, namespace, obj)
    assert code != 0, f"{case} was accepted"
    assert expected in err, err


#: (id, merge patch applied to a valid resize, what the error must say)
INVALID_UPDATES: list[tuple[str, dict[str, Any], str]] = [
    ("revert-flipped-back", {"spec": {"revert": False}}, "revert cannot be set back to false"),
    ("confirm-flipped-back", {"spec": {"confirm": False}}, "confirm cannot be set back"),
    ("instance-renamed", {"spec": {"instanceName": "web-2"}}, "instanceName is immutable"),
    ("flavor-changed", {"spec": {"flavor": "m1.medium"}}, "flavor is immutable"),
    ("flavor-removed", {"spec": {"flavor": None}}, "flavor is immutable"),
    ("target-host-added", {"spec": {"targetHost": "hv-9"}}, "targetHost is immutable"),
]


@pytest.mark.parametrize(("case", "patch", "expected"), INVALID_UPDATES,
                         ids=[c[0] for c in INVALID_UPDATES])
def test_invalid_update_is_refused(kubeconfig: Path, namespace: str, case: str,
                                   patch: dict[str, Any], expected: str) -> None:
    flag = "revert" if case != "confirm-flipped-back" else "confirm"
    code, err = _apply(kubeconfig, namespace, resize(flavor="m1.small"))
    assert code == 0, err
    _verify_resize(kubeconfig, namespace)  # confirm/revert are accepted only there
    kubectl(kubeconfig, "patch", "vmresize", "r1", "-n", namespace, "--type", "merge",
            "-p", json.dumps({"spec": {flag: True}}))
    proc = kubectl(kubeconfig, "patch", "vmresize", "r1", "-n", namespace, "--type", "merge",
                   "-p", json.dumps(patch), check=False)
    assert proc.returncode != 0, f"{case} was accepted"
    assert expected in proc.stderr, proc.stderr


def _verify_resize(kubeconfig: Path, namespace: str) -> None:
    """Put r1 in VerifyResize, as the operator would (status subresource)."""
    kubectl(kubeconfig, "patch", "vmresize", "r1", "-n", namespace, "--subresource=status",
            "--type", "merge", "-p", '{"status":{"phase":"VerifyResize"}}')


def test_confirm_can_be_set_once(kubeconfig: Path, namespace: str) -> None:
    code, err = _apply(kubeconfig, namespace, resize(flavor="m1.small"))
    assert code == 0, err
    _verify_resize(kubeconfig, namespace)
    kubectl(kubeconfig, "patch", "vmresize", "r1", "-n", namespace, "--type", "merge",
            "-p", '{"spec":{"confirm":true}}')
    proc = kubectl(kubeconfig, "patch", "vmresize", "r1", "-n", namespace, "--type", "merge",
                   "-p", '{"spec":{"revert":true}}', check=False)
    assert "confirm and revert are mutually exclusive" in proc.stderr


def test_hosttask_spec_is_immutable(kubeconfig: Path, namespace: str) -> None:
    task = {"apiVersion": API_VERSION, "kind": "HostTask",
            "metadata": {"name": "t1"},
            "spec": {"host": "hv-1", "action": "Prepare", "owner": f"{namespace}/r1",
                     "instance": f"{namespace}/web-1"}}
    assert _apply(kubeconfig, namespace, task)[0] == 0
    proc = kubectl(kubeconfig, "patch", "hosttask", "t1", "-n", namespace, "--type", "merge",
                   "-p", '{"spec":{"host":"hv-2"}}', check=False)
    assert "a HostTask's spec is immutable" in proc.stderr


def _header(kubeconfig: Path, *args: str) -> list[str]:
    out = kubectl(kubeconfig, "get", *args).stdout
    return out.splitlines()[0].split()


def test_printer_columns(kubeconfig: Path, namespace: str) -> None:
    for f in ("flavors.yaml", "hosts.yaml", "instance.yaml", "resize.yaml"):
        kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(EXAMPLES / f))
    assert _header(kubeconfig, "vmresize", "-n", namespace) == [
        "NAME", "PHASE", "INSTANCE", "FROM", "TO", "FLAVOR", "PROGRESS", "AGE"]
    assert _header(kubeconfig, "hosts") == [
        "NAME", "ENABLED", "READY", "VCPUS", "MEMORY-MIB", "DISK-GIB", "HEARTBEAT", "AGE"]
    assert _header(kubeconfig, "flavors") == [
        "NAME", "VCPUS", "MEMORY-MIB", "DISK-GIB", "AGE"]
    assert _header(kubeconfig, "instances", "-n", namespace) == [
        "NAME", "PHASE", "HOST", "FLAVOR", "POWER", "RESIZE", "AGE"]
    assert _header(kubeconfig, "vmr", "-n", namespace, "-o", "wide")[-4:] == [
        "DOWNTIME", "REASON", "MESSAGE", "AGE"]
    # The short names and the category resolve too.
    assert "web-1-resize" in kubectl(kubeconfig, "get", "vmresize-all", "-n", namespace).stdout
    kubectl(kubeconfig, "delete", "-f", str(EXAMPLES / "hosts.yaml"), "-f",
            str(EXAMPLES / "flavors.yaml"), "--wait=false")


def test_example_yaml_parses_into_models() -> None:
    kinds = {k.kind_name: k for k in KINDS}   # every kind an example may show
    for f in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            kinds[doc["kind"]].from_body(doc)
