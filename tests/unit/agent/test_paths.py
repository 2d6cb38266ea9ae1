"""confine(): relative paths stay under the storage root, whatever the input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmresize.agent.paths import PathEscapeError, confine, open_nofollow


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "instances" / "ns").mkdir(parents=True)
    return r


def test_plain_relative_path_resolves_inside(root: Path) -> None:
    got = confine(root, "instances/ns/vm/abcd1234/disk.qcow2")
    assert got == root.resolve() / "instances/ns/vm/abcd1234/disk.qcow2"


@pytest.mark.parametrize("rel", [
    "", "/etc/passwd", "//etc/passwd", "../x", "a/../../x", "instances/..", "a/\x00b", ".",
    "instances/./..",
])
def test_refused(root: Path, rel: str) -> None:
    with pytest.raises(PathEscapeError):
        confine(root, rel)


def test_symlinked_directory_out_of_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "instances" / "evil").symlink_to(outside)
    with pytest.raises(PathEscapeError):
        confine(root, "instances/evil/disk.qcow2")


def test_symlinked_last_component_out_of_root_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "instances" / "disk.qcow2").symlink_to(tmp_path / "nowhere")  # dangling
    with pytest.raises(PathEscapeError):
        confine(root, "instances/disk.qcow2")


def test_symlink_staying_inside_root_is_allowed(root: Path) -> None:
    (root / "instances" / "alias").symlink_to(root / "instances" / "ns")
    assert confine(root, "instances/alias/d") == (root / "instances/ns/d").resolve()


def test_open_nofollow_refuses_symlink(root: Path) -> None:
    target = root / "instances" / "real"
    target.write_bytes(b"x")
    link = root / "instances" / "link"
    link.symlink_to(target)
    with pytest.raises(PathEscapeError):
        open_nofollow(link, os.O_RDONLY)
    os.close(open_nofollow(target, os.O_RDONLY))
