"""The two images of the Dockerfile, built for real and run.

``hack/build-images.sh`` builds the operator and agent targets with buildah on a local
Debian bookworm base made by mmdebstrap (no registry involved); its cache under
$VMRESIZE_CACHE/images makes a second run take seconds. Each image then runs commands in a
working container with ``buildah run --isolation chroot`` (``podman run`` cannot set
rlimits on this kind of machine), as the user its config names:

- both entry points start (``--help`` parses the real argument parser after all imports);
- the operator image holds no libvirt, neither the Python module nor the C library;
- the agent image imports libvirt-python against its libvirt0 and has qemu-img;
- each image's USER is the one the Helm chart runs it as (operator 65532, agent 0), and
  ``id -u`` inside says the same.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "build-images.sh"
VALUES = REPO / "deploy" / "helm" / "vmresize" / "values.yaml"
#: A cold build (mmdebstrap, apt, PyPI, compiling libvirt-python) took about 7 minutes on
#: a loaded 2-core machine; this bounds a stuck download, it is not a performance check.
BUILD_TIMEOUT = 1800
RUN_TIMEOUT = 120
TAG = "dev"  # hack/build-images.sh's default VMRESIZE_IMAGE_TAG


def buildah(store: list[str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["buildah", *store, *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def store() -> list[str]:
    """Builds (or re-uses) both images; the buildah flags of the store that holds them."""
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    flags = subprocess.run(["bash", str(SCRIPT), "--storage-flags"], capture_output=True,
                           text=True, check=True, timeout=RUN_TIMEOUT).stdout.splitlines()
    assert flags
    return flags


@dataclass(frozen=True)
class Container:
    """A buildah working container of one image; commands run as the image's user."""

    store: list[str]
    name: str
    image: str

    def run(self, *argv: str, check: bool = True,
            user: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` in the container, as the image's user unless ``user`` is given."""
        as_user = ["--user", user] if user else []
        return buildah(self.store, "run", "--isolation", "chroot", *as_user, self.name, "--",
                       *argv, check=check)

    def config(self) -> dict[str, Any]:
        """The image's OCI config (User, Entrypoint, Env, ...)."""
        doc = json.loads(buildah(self.store, "inspect", "--type", "image", self.image).stdout)
        config: dict[str, Any] = doc["OCIv1"]["config"]
        return config


def container(store: list[str], target: str) -> Iterator[Container]:
    image = f"localhost/vmresize-{target}:{TAG}"
    name = f"vmresize-test-{target}-{uuid.uuid4().hex[:8]}"
    buildah(store, "from", "--pull-never", "--name", name, image)
    try:
        yield Container(store, name, image)
    finally:
        buildah(store, "rm", name, check=False)


@pytest.fixture(scope="module")
def operator(store: list[str]) -> Iterator[Container]:
    yield from container(store, "operator")


@pytest.fixture(scope="module")
def agent(store: list[str]) -> Iterator[Container]:
    yield from container(store, "agent")


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    return values


def test_operator_entry_point_starts(operator: Container) -> None:
    assert operator.config()["Entrypoint"] == ["vmresize-operator"]
    out = operator.run("vmresize-operator", "--help").stdout
    assert out.startswith("usage: vmresize-operator")
    assert "--standalone" in out


def test_agent_entry_point_starts(agent: Container) -> None:
    assert agent.config()["Entrypoint"] == ["vmresize-agent"]
    out = agent.run("vmresize-agent", "--help").stdout
    assert out.startswith("usage: vmresize-agent")
    assert "--libvirt-uri" in out


def test_operator_image_has_no_libvirt(operator: Container) -> None:
    denied = operator.run("python3", "-c", "import libvirt", check=False)
    assert denied.returncode != 0
    assert "No module named 'libvirt'" in denied.stderr
    denied = operator.run("python3", "-c", "import asyncssh", check=False)
    assert "No module named 'asyncssh'" in denied.stderr
    # No libvirt library anywhere on the file system either (not just off the linker path).
    found = operator.run("find", "/", "-xdev", "-name", "libvirt*.so*", user="0:0").stdout
    assert found.strip() == ""
    # The operator's own modules do import in the image (the check above is not vacuous).
    operator.run("python3", "-c", "import vmresize.operator.__main__, kopf")


def test_agent_image_has_libvirt_python_and_qemu_img(agent: Container) -> None:
    version = agent.run("python3", "-c",
                        "import libvirt; print(libvirt.getVersion())").stdout.strip()
    assert int(version) >= 9_000_000  # bookworm's libvirt 9.0
    agent.run("python3", "-c", "import asyncssh, vmresize.agent.__main__")
    assert agent.run("qemu-img", "--version").stdout.startswith("qemu-img version")


def test_operator_runs_as_the_charts_non_root_user(operator: Container) -> None:
    security = chart_values()["operator"]["podSecurityContext"]
    uid, gid = security["runAsUser"], security["runAsGroup"]
    assert uid != 0
    assert operator.config()["User"] == f"{uid}:{gid}"
    assert operator.run("id", "-u").stdout.strip() == str(uid)
    assert operator.run("id", "-g").stdout.strip() == str(gid)
    # As that user it can write nowhere in the image (the chart mounts it read-only too).
    denied = operator.run("touch", "/opt/vmresize/x", check=False)
    assert denied.returncode != 0


def test_agent_runs_as_the_charts_user(agent: Container) -> None:
    """The agent is root by design (libvirtd authorises qemu:///system by peer uid; see
    values.yaml agent.securityContext), and the image agrees with the chart."""
    uid = chart_values()["agent"]["securityContext"]["runAsUser"]
    assert agent.config()["User"] == f"{uid}:{uid}"
    assert agent.run("id", "-u").stdout.strip() == str(uid)


@pytest.mark.parametrize("target", ["operator", "agent"])
def test_no_build_only_files_in_the_images(target: str, request: pytest.FixtureRequest) -> None:
    """Wheels, sources and build secrets stay in the build stages; no compiler in the agent."""
    image: Container = request.getfixturevalue(target)
    for path in ("/tmp/wheels", "/wheels", "/src", "/run/secrets", "/usr/bin/gcc"):
        assert image.run("test", "!", "-e", path, check=False).returncode == 0, path
