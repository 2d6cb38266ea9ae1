"""Shared-storage detection: a marker written by the destination, looked for by the source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmresize.agent.errors import PathEscapeError
from vmresize.agent.vmfiles import sharedstore

DEST_DIR = "instances/ns/web/9b0d7e44"


def roots(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    return a, b


def test_separate_roots_do_not_share(tmp_path: Path) -> None:
    src, dst = roots(tmp_path)
    sharedstore.mark(dst, DEST_DIR, "t1")
    assert not sharedstore.visible(src, DEST_DIR, "t1")
    assert sharedstore.visible(dst, DEST_DIR, "t1")  # a same-host resize shares with itself


def test_one_filesystem_under_two_names_shares(tmp_path: Path) -> None:
    src, _ = roots(tmp_path)
    dst = tmp_path / "mount-of-a"
    dst.symlink_to(src)  # the destination's root is the same directory (an NFS export, say)
    path = sharedstore.mark(dst, DEST_DIR, "t1")
    assert sharedstore.visible(src, DEST_DIR, "t1")
    assert sharedstore.visible(src, DEST_DIR, "t2") is False  # another resize's marker
    first = path.read_text()
    sharedstore.mark(dst, DEST_DIR, "t1")  # idempotent: the marker is kept as it is
    assert path.read_text() == first
    assert len(first.strip()) == 32
    sharedstore.clear(dst, DEST_DIR, "t1")
    sharedstore.clear(dst, DEST_DIR, "t1")
    assert not sharedstore.visible(src, DEST_DIR, "t1")


def test_a_symlink_is_not_a_marker(tmp_path: Path) -> None:
    src, _ = roots(tmp_path)
    target = src / "elsewhere"
    target.write_text("x")
    (src / DEST_DIR).mkdir(parents=True)
    os.symlink(target, src / sharedstore.marker_rel(DEST_DIR, "t1"))
    assert not sharedstore.visible(src, DEST_DIR, "t1")


def test_the_marker_stays_under_the_root(tmp_path: Path) -> None:
    src, _ = roots(tmp_path)
    with pytest.raises(PathEscapeError):
        sharedstore.mark(src, "../outside", "t1")
