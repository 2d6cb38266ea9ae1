"""Bad input through the real API server, table-driven, one parametrized test per surface.

- create: wrong types, bounds, names and shapes, refused by the CRD schemas and CEL (422);
- update: sequences (confirm or revert outside VerifyResize, confirm+revert, immutable
  fields, a Flavor's sizes) refused by CEL transition rules (422), while the operator's
  status writes are never refused by them;
- admin acts: a tenant's forced host or adoption, refused by the chart's
  ValidatingAdmissionPolicy (403), rendered from deploy/helm/vmresize;
- references: a flavor or instance that does not exist, a domain another Instance owns, an
  adoption that does not fit, answered by the real operator with a status reason and an
  Event (tests/support/op_harness.py plays the agents).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hack.localcluster import ensure_binaries
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tests.support import REPO
from tests.support.kube import kubectl
from tests.support.op_harness import Fulfiller, Operator, World, wait_for

from vmresize.api.meta import API_VERSION, GROUP, VERSION

G, V = GROUP, VERSION
Obj = dict[str, Any]


def flavor(name: str = "bad-flavor", **spec: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "Flavor", "metadata": {"name": name},
            "spec": {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1, **spec}}


def instance(name: str = "web-1", **spec: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavor": "m1.tiny", **spec}}


def resize(name: str = "r1", **spec: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "VMResize", "metadata": {"name": name},
            "spec": {"instanceName": "web-1", "flavor": "m1.small", **spec}}


def host(**spec: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "Host", "metadata": {"name": "bad-host"},
            "spec": spec}


PLURAL = {"Flavor": "flavors", "Instance": "instances", "VMResize": "vmresizes",
          "Host": "hosts"}


def create(co: client.CustomObjectsApi, ns: str, obj: Obj) -> Obj:
    plural = PLURAL[obj["kind"]]
    if obj["kind"] in ("Flavor", "Host"):
        return dict(co.create_cluster_custom_object(G, V, plural, obj))
    return dict(co.create_namespaced_custom_object(G, V, ns, plural, obj))


def refusal(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ApiException) as err:
        call()
    return err.value.status, json.loads(err.value.body).get("message", "")


@pytest.fixture
def co(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


MUST_INT, MUST_STR = "must be of type integer", "must be of type string"
# (id, object, HTTP status, fragment of the message)
CREATE: list[tuple[str, Obj, int, str]] = [
    ("flavor-vcpus-a-string", flavor(vcpus="two"), 422, f"spec.vcpus in body {MUST_INT}"),
    ("flavor-vcpus-a-float", flavor(vcpus=1.5), 422, f"spec.vcpus in body {MUST_INT}"),
    ("flavor-vcpus-zero", flavor(vcpus=0), 422,
     "spec.vcpus in body should be greater than or equal to 1"),
    ("flavor-vcpus-over-1024", flavor(vcpus=1025), 422, "should be less than or equal to 1024"),
    ("flavor-memory-under-16", flavor(memoryMiB=15), 422, "spec.memoryMiB"),
    ("flavor-disk-over-64ti", flavor(diskGiB=65537), 422, "spec.diskGiB"),
    ("flavor-ephemeral-negative", flavor(ephemeralGiB=-1), 422, "spec.ephemeralGiB"),
    ("flavor-swap-negative", flavor(swapMiB=-1), 422, "spec.swapMiB"),
    ("flavor-swap-over-1ti", flavor(swapMiB=1024 * 1024 + 1), 422, "spec.swapMiB"),
    ("instance-image-of-no-declared-format", instance(image={"baseImage": "debian.img"}), 422,
     "spec.image.baseImage in body should match"),
    ("flavor-extra-spec-not-a-string", flavor(extraSpecs={"hw:cpu_policy": 1}), 422,
     f"spec.extraSpecs.hw:cpu_policy in body {MUST_STR}"),
    ("flavor-spec-missing", {**flavor(), "spec": None}, 422, "spec: Required value"),
    ("flavor-name-uppercase", flavor(name="M1-Big"), 422, "RFC 1123 subdomain"),
    ("flavor-name-too-long", flavor(name="f" * 254), 422, "must be no more than 253"),
    ("instance-spec-a-string", {**instance(), "spec": "web"}, 422,
     "spec in body must be of type object"),
    ("instance-name-dotted", instance(name="web.1"), 422, "metadata.name must be a DNS-1123 label"),
    ("instance-name-64-chars", instance(name="w" * 64), 422, "at most 63 characters"),
    ("instance-flavor-path", instance(flavor="../x"), 422, "spec.flavor in body should match"),
    ("instance-flavor-254-chars", instance(flavor="f" * 254), 422, "spec.flavor: Too long"),
    ("instance-flavor-missing", {**instance(), "spec": {}}, 422, "spec.flavor: Required value"),
    ("instance-host-uppercase", instance(host="HV-1"), 422, "spec.host in body should match"),
    ("instance-adopt-without-host", instance(adopt={"domainName": "legacy"}), 422,
     "spec.adopt needs spec.host"),
    ("instance-adopt-empty-domain", instance(host="hv-1", adopt={"domainName": ""}), 422,
     "spec.adopt.domainName"),
    ("instance-adopt-domain-traversal", instance(host="hv-1", adopt={"domainName": "../../x"}),
     422, "spec.adopt.domainName in body should match"),
    ("instance-image-absolute-path", instance(image={"baseImage": "/etc/shadow"}), 422,
     "spec.image.baseImage in body should match"),
    ("instance-seed-too-long", instance(image={"seedPattern": "s" * 65}), 422,
     "spec.image.seedPattern: Too long"),
    ("resize-confirm-on-create", resize(confirm=True), 422,
     "spec.confirm is accepted only while the resize is in VerifyResize; it is Pending"),
    ("resize-revert-on-create", resize(revert=True), 422,
     "spec.revert is accepted only while the resize is in VerifyResize; it is Pending"),
    ("resize-confirm-and-revert", resize(confirm=True, revert=True), 422,
     "confirm and revert are mutually exclusive"),
    ("resize-confirm-not-a-bool", resize(confirm="yes"), 422,
     "spec.confirm in body must be of type boolean"),
    ("resize-instance-name-64-chars", resize(instanceName="w" * 64), 422,
     "spec.instanceName: Too long"),
    ("resize-instance-name-path", resize(instanceName="../web-1"), 422,
     "spec.instanceName in body should match"),
    ("resize-instance-name-empty", resize(instanceName=""), 422, "spec.instanceName"),
    ("resize-target-host-path", resize(targetHost="hv/../hv-2"), 422,
     "spec.targetHost in body should match"),
    ("resize-auto-confirm-over-30-days", resize(autoConfirmSeconds=30 * 24 * 3600 + 1), 422,
     "spec.autoConfirmSeconds in body should be less than or equal to 2592000"),
    ("resize-auto-confirm-a-string", resize(autoConfirmSeconds="soon"), 422,
     f"spec.autoConfirmSeconds in body {MUST_INT}"),
    ("host-reserved-a-string", host(reserved={"vcpus": "all"}), 422, "spec.reserved.vcpus"),
    ("host-memory-ratio-zero", host(allocationRatios={"memory": 0}), 422,
     "spec.allocationRatios.memory"),
]


@pytest.mark.parametrize(("obj", "code", "fragment"), [c[1:] for c in CREATE],
                         ids=[c[0] for c in CREATE])
def test_create_is_refused(co: client.CustomObjectsApi, namespace: str, obj: Obj, code: int,
                           fragment: str) -> None:
    status, message = refusal(lambda: create(co, namespace, obj))
    assert (status, fragment in message) == (code, True), message


# (id, object created, status phase set by the "operator", accepted spec patches, refused
#  spec patch, fragment of the 422 message)
UPDATE: list[tuple[str, Obj, str | None, list[Obj], Obj, str]] = [
    ("confirm-while-pending", resize(), None, [], {"confirm": True},
     "spec.confirm is accepted only while the resize is in VerifyResize; it is Pending"),
    ("confirm-on-a-failed-resize", resize(), "Failed", [], {"confirm": True}, "it is Failed"),
    ("revert-on-a-failed-resize", resize(), "Failed", [], {"revert": True},
     "spec.revert is accepted only while the resize is in VerifyResize; it is Failed"),
    ("confirm-while-migrating", resize(), "Migrating", [], {"confirm": True}, "it is Migrating"),
    ("revert-after-rollback", resize(), "RolledBack", [], {"revert": True}, "it is RolledBack"),
    ("confirm-and-revert-together", resize(), "VerifyResize", [],
     {"confirm": True, "revert": True}, "confirm and revert are mutually exclusive"),
    ("revert-after-confirm", resize(), "VerifyResize", [{"confirm": True}], {"revert": True},
     "confirm and revert are mutually exclusive"),
    ("confirm-taken-back", resize(), "VerifyResize", [{"confirm": True}], {"confirm": False},
     "confirm cannot be set back to false"),
    ("cancel-in-verify-resize", resize(), "VerifyResize", [], {"cancel": True},
     "spec.cancel is accepted only before VerifyResize; it is VerifyResize: use spec.revert"),
    ("cancel-while-confirming", resize(), "Confirming", [], {"cancel": True},
     "spec.cancel is accepted only before VerifyResize; it is Confirming"),
    ("cancel-after-rollback", resize(), "RolledBack", [], {"cancel": True}, "it is RolledBack"),
    ("cancel-taken-back", resize(), "Migrating", [{"cancel": True}], {"cancel": False},
     "cancel cannot be set back to false"),
    ("instance-name-changed", resize(), None, [], {"instanceName": "web-2"},
     "instanceName is immutable"),
    ("resize-flavor-changed", resize(), None, [], {"flavor": "m1.large"}, "flavor is immutable"),
    ("resize-flavor-removed", resize(), None, [], {"flavor": None}, "flavor is immutable"),
    ("target-host-added-later", resize(), None, [], {"targetHost": "hv-2"},
     "targetHost is immutable"),
    ("flavor-vcpus-edited", flavor(), None, [{"extraSpecs": {"k": "v"}}], {"vcpus": 2},
     "vcpus is immutable: a Flavor's sizes never change"),
    ("flavor-memory-edited", flavor(), None, [], {"memoryMiB": 256}, "memoryMiB is immutable"),
    ("flavor-disk-edited", flavor(), None, [], {"diskGiB": 2}, "diskGiB is immutable"),
    ("flavor-ephemeral-edited", flavor(), None, [], {"ephemeralGiB": 1},
     "ephemeralGiB is immutable"),
    ("flavor-swap-added", flavor(), None, [], {"swapMiB": 512}, "swapMiB is immutable"),
    ("instance-host-changed", instance(host="hv-1"), None, [], {"host": "hv-2"},
     "host is immutable"),
    ("instance-adopt-added-later", instance(host="hv-1"), None, [],
     {"adopt": {"domainName": "legacy"}}, "adopt is immutable"),
]


@pytest.mark.parametrize(("obj", "phase", "accepted", "patch", "fragment"),
                         [c[1:] for c in UPDATE], ids=[c[0] for c in UPDATE])
def test_update_is_refused(co: client.CustomObjectsApi, namespace: str, obj: Obj,
                           phase: str | None, accepted: list[Obj], patch: Obj,
                           fragment: str) -> None:
    name = f"{obj['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    obj = {**obj, "metadata": {"name": name}}
    create(co, namespace, obj)
    plural = PLURAL[obj["kind"]]
    scoped = obj["kind"] != "Flavor"

    def patch_spec(spec: Obj) -> object:
        if scoped:
            return co.patch_namespaced_custom_object(G, V, namespace, plural, name, {"spec": spec})
        return co.patch_cluster_custom_object(G, V, plural, name, {"spec": spec})

    try:
        if phase is not None:
            co.patch_namespaced_custom_object_status(G, V, namespace, plural, name,
                                                     {"status": {"phase": phase}})
        for ok in accepted:
            patch_spec(ok)
        status, message = refusal(lambda: patch_spec(patch))
        assert (status, fragment in message) == (422, True), message
    finally:
        if not scoped:
            co.delete_cluster_custom_object(G, V, plural, name)


def test_confirm_in_verify_resize_and_every_status_write_are_accepted(
        co: client.CustomObjectsApi, namespace: str) -> None:
    """The transition rules bite only spec changes: the operator's status writes through
    every phase, before and after a confirm, are never refused; nor is a confirm in
    VerifyResize, nor editing a Flavor's extra specs."""
    create(co, namespace, resize())

    def status(phase: str) -> None:
        co.patch_namespaced_custom_object_status(G, V, namespace, "vmresizes", "r1", {
            "status": {"phase": phase, "currentTask": f"t-{phase.lower()}"}})

    for phase in ("Scheduling", "Preparing", "Migrating", "Finishing", "VerifyResize"):
        status(phase)
    co.patch_namespaced_custom_object(G, V, namespace, "vmresizes", "r1",
                                      {"spec": {"confirm": True}})
    for phase in ("Confirming", "Failed", "Confirmed"):
        status(phase)
    got = co.get_namespaced_custom_object(G, V, namespace, "vmresizes", "r1")
    assert (got["spec"]["confirm"], got["status"]["phase"]) == (True, "Confirmed")
    name = f"f-{uuid.uuid4().hex[:8]}"
    create(co, namespace, flavor(name=name))
    co.patch_cluster_custom_object(G, V, "flavors", name, {"spec": {"extraSpecs": {"a": "b"}}})
    co.delete_cluster_custom_object(G, V, "flavors", name)


# --- admin acts, through the chart's ValidatingAdmissionPolicy ------------------------------

@pytest.fixture(scope="module")
def forced_host_policy(kubeconfig: Path) -> Iterator[str]:
    """The chart's forced-host policy and binding, rendered by helm and applied."""
    release = f"bad{uuid.uuid4().hex[:6]}"
    rendered = subprocess.run(
        [str(ensure_binaries() / "helm"), "template", release,
         str(REPO / "deploy/helm/vmresize"), "--show-only", "templates/admission-policy.yaml",
         "--set", "admission.agentHostScope=false", "--set", "admission.operatorFinalizer=false"],
        check=True, capture_output=True, text=True, timeout=120).stdout
    kubectl(kubeconfig, "apply", "-f", "-", stdin=rendered)
    yield f"{release}-vmresize-forced-host"
    kubectl(kubeconfig, "delete", "-f", "-", "--wait=false", stdin=rendered, check=False)


@pytest.fixture
def alice(kubeconfig: Path, namespace: str, forced_host_policy: str) -> client.CustomObjectsApi:
    """A tenant who may create Instances and VMResizes in ``namespace`` (RBAC allows it)."""
    kubectl(kubeconfig, "create", "role", "tenant", "-n", namespace, "--verb=create,get",
            "--resource=instances.vmresize.io,vmresizes.vmresize.io")
    kubectl(kubeconfig, "create", "rolebinding", "alice", "-n", namespace, "--role=tenant",
            "--user=alice")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", "alice")
    api.set_default_header("Impersonate-Group", "developers")
    return client.CustomObjectsApi(api)


DENIED = 'which only an admin may do: user "alice" is not in the groups system:masters'
ADMIN_ACTS: list[tuple[str, Obj, str]] = [
    ("tenant-forces-a-resize-host", resize(targetHost="hv-2"), "spec.targetHost forces a host"),
    ("tenant-places-an-instance", instance(host="hv-1"), "spec.host forces a host"),
    ("tenant-adopts-a-domain", instance(host="hv-1", adopt={"domainName": "other-tenant-vm"}),
     "spec.adopt takes over an existing domain"),
]


@pytest.mark.parametrize(("obj", "fragment"), [c[1:] for c in ADMIN_ACTS],
                         ids=[c[0] for c in ADMIN_ACTS])
def test_admin_acts_are_forbidden_to_tenants(co: client.CustomObjectsApi,
                                             alice: client.CustomObjectsApi, namespace: str,
                                             forced_host_policy: str, obj: Obj,
                                             fragment: str) -> None:
    # The policy is enforced once the API server's informer has it (about a second).
    def denied() -> tuple[int, str] | None:
        try:
            create(alice, namespace, obj)
        except ApiException as e:
            return e.status, json.loads(e.body)["message"]
        co.delete_namespaced_custom_object(G, V, namespace, PLURAL[obj["kind"]],
                                           obj["metadata"]["name"])
        return None

    status, message = wait_for("the policy to deny", denied, timeout=30, interval=0.5)
    assert status == 403
    assert forced_host_policy in message, message
    assert fragment in message, message
    assert DENIED in message, message
    # The same tenant may ask without placing; an admin may place.
    plain = {**obj, "spec": {k: v for k, v in obj["spec"].items()
                             if k not in ("targetHost", "host", "adopt")}}
    create(alice, namespace, plain)
    create(co, namespace, {**obj, "metadata": {"name": "by-admin"}})


# --- references, answered by the real operator ------------------------------------------------

@pytest.fixture
def stack(api_client: client.ApiClient, kubeconfig: Path, namespace: str,
          tmp_path: Path) -> Iterator[World]:
    world = World(api_client, namespace)
    world.make_flavors()
    op = Operator(kubeconfig, namespace, tmp_path / "operator.log")
    try:
        with Fulfiller(api_client, namespace, world.hosts):
            world.make_host("a", vcpus=2, memory_mib=2048 + 512)
            op.start()
            yield world
    finally:
        op.stop()
        world.cleanup()


def adopt(w: World, name: str, flavor: str = "small") -> None:
    w.co.create_namespaced_custom_object(G, V, w.ns, "instances", {
        "apiVersion": API_VERSION, "kind": "Instance", "metadata": {"name": name},
        "spec": {"flavor": w.flavor(flavor), "host": w.host("a"),
                 "adopt": {"domainName": "legacy-web"}}})


def _owned_twice(w: World) -> tuple[str, str]:
    adopt(w, "first")
    wait_for("first adopted", lambda: w.status("instances", "first").get("phase") == "Active")
    adopt(w, "second")
    return "instances", "second"


# (id, setup returning (plural, name), phase, reason, fragment of status message and Event)
REFERENCES: list[tuple[str, Callable[[World], tuple[str, str]], str, str, str]] = [
    ("resize-of-a-missing-instance",
     lambda w: (w.resize("r1", "ghost", "medium"), ("vmresizes", "r1"))[1],
     "Failed", "InstanceNotFound", "Instance ghost does not exist"),
    ("resize-to-a-missing-flavor",
     lambda w: (w.instance("vm1", host="a"), w.resize("r1", "vm1", "ghost"),
                ("vmresizes", "r1"))[2],
     "Failed", "FlavorNotFound", "-ghost does not exist"),
    ("resize-that-shrinks-the-disk",
     lambda w: (w.instance("vm1", host="a"), w.resize("r1", "vm1", "tiny-disk"),
                ("vmresizes", "r1"))[2],
     "Failed", "DiskShrink", "a resize never shrinks a disk"),
    ("resize-that-shrinks-the-ephemeral-disk",
     lambda w: (w.instance("vm1", "eph-2", host="a"), w.resize("r1", "vm1", "eph-1"),
                ("vmresizes", "r1"))[2],
     "Failed", "EphemeralShrink", "GiB ephemeral disk but the instance has 2 GiB"),
    ("instance-of-a-missing-flavor",
     lambda w: (w.instance("vm1", "ghost", wait=False), ("instances", "vm1"))[1],
     "Error", "FlavorNotFound", "-ghost does not exist"),
    ("adopt-of-an-owned-domain", _owned_twice, "Error", "DomainAlreadyOwned",
     "is owned by Instance"),
    ("adopt-that-does-not-fit", lambda w: (adopt(w, "big", "large"), ("instances", "big"))[1],
     "Pending", "DoesNotFit", "does not fit on host"),
]


@pytest.mark.parametrize(("setup", "phase", "reason", "fragment"),
                         [c[1:] for c in REFERENCES], ids=[c[0] for c in REFERENCES])
def test_bad_reference_gets_a_status_reason_and_an_event(
        stack: World, setup: Callable[[World], tuple[str, str]], phase: str, reason: str,
        fragment: str) -> None:
    plural, name = setup(stack)

    def said() -> Obj | None:
        st = stack.status(plural, name)
        return st if fragment in st.get("message", "") else None

    st = wait_for(f"{plural}/{name} to say {fragment!r}", said, timeout=60)
    assert st.get("phase", "Pending") == phase, st
    reasons = {c["type"]: c["reason"] for c in st.get("conditions", [])}
    assert st.get("reason", reasons.get("Ready", reasons.get("Failed"))) == reason, st
    assert any(e.startswith(f"Warning {reason}:") and fragment in e
               for e in stack.events_once(name, fragment)), stack.events(name)
    if plural == "instances" and phase != "Active":
        claims = stack.allocations("a")
        assert f"Instance/{stack.ns}/{name}" not in claims, claims
