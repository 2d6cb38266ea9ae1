"""Extents, whole-file sha256 (== sha256sum) and sizes of sparse files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vmresize.agent.transfer.sparse import (
    Extent,
    SparseSink,
    allocated_bytes,
    apparent_size,
    iter_extents,
    sha256_fd,
    sha256_file,
    split_extents,
)

MiB = 1024 * 1024


def make_sparse(path: Path, size: int, chunks: dict[int, bytes]) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for off, data in chunks.items():
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def extents_of(path: Path) -> list[Extent]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(iter_extents(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def test_extents_cover_exactly_the_data(tmp_path: Path) -> None:
    p = tmp_path / "d"
    make_sparse(p, 64 * MiB, {MiB: b"a" * MiB, 10 * MiB: b"b" * (2 * MiB)})
    exts = extents_of(p)
    assert exts == [Extent(MiB, MiB), Extent(10 * MiB, 2 * MiB)]


def test_trailing_data_and_unaligned_size(tmp_path: Path) -> None:
    p = tmp_path / "d"
    size = 8 * MiB + 123
    make_sparse(p, size, {size - 10: b"z" * 10})
    exts = extents_of(p)
    assert exts[-1].offset + exts[-1].length == size
    assert sum(e.length for e in exts) <= 64 * 1024


def test_empty_and_all_hole_files_have_no_extents(tmp_path: Path) -> None:
    p = tmp_path / "d"
    make_sparse(p, 0, {})
    assert extents_of(p) == []
    make_sparse(p, 16 * MiB, {})
    assert extents_of(p) == []


@pytest.mark.parametrize("layout", [
    {},
    {0: b"x"},
    {3 * MiB + 7: os.urandom(5 * MiB)},
    {0: os.urandom(MiB), 20 * MiB - 4096: os.urandom(4096)},
])
def test_sha256_equals_sha256sum(tmp_path: Path, layout: dict[int, bytes]) -> None:
    p = tmp_path / "d"
    make_sparse(p, 20 * MiB, layout)
    expected = hashlib.sha256(p.read_bytes()).hexdigest()
    assert sha256_file(p) == expected
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", str(p)], capture_output=True, text=True, check=True)
        assert out.stdout.split()[0] == expected


def test_split_extents() -> None:
    got = list(split_extents([Extent(0, 10), Extent(20, 3)], 4))
    assert got == [Extent(0, 4), Extent(4, 4), Extent(8, 2), Extent(20, 3)]


def test_sizes(tmp_path: Path) -> None:
    p = tmp_path / "d"
    make_sparse(p, 100 * MiB, {0: b"y" * MiB})
    assert apparent_size(p) == 100 * MiB
    assert MiB <= allocated_bytes(p) < 4 * MiB


def _sink_write(path: Path, size: int, writes: list[tuple[int, bytes]],
                stream_hash: bool = True) -> tuple[str | None, list[tuple[int, int]]]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, size)
    seen: list[tuple[int, int]] = []
    sink = SparseSink(fd, size, stream_hash=stream_hash,
                      on_written=lambda off, n: seen.append((off, n)))
    for off, data in writes:
        sink.write(off, data)
    digest = sink.digest().result(timeout=30)
    readback = sink.call(sha256_fd).result(timeout=30)
    closed: list[bool] = []
    sink.close(lambda: closed.append(True))
    for _ in range(3000):
        if closed:
            break
        time.sleep(0.01)
    assert closed == [True]
    assert readback == hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, seen


def test_sink_streams_the_sha256_of_the_whole_sparse_image(tmp_path: Path) -> None:
    p = tmp_path / "d"
    size = 12 * MiB + 5
    writes = [(MiB, os.urandom(300_000)), (4 * MiB, os.urandom(MiB)), (size - 5, b"tail!")]
    digest, seen = _sink_write(p, size, writes)
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    assert seen == [(off, len(data)) for off, data in writes]
    assert allocated_bytes(p) < 4 * MiB  # holes stayed holes


def test_sink_out_of_order_writes_give_no_streamed_digest(tmp_path: Path) -> None:
    digest, _ = _sink_write(tmp_path / "d", 4 * MiB, [(MiB, b"b" * 10), (0, b"a" * 10)])
    assert digest is None
    digest, _ = _sink_write(tmp_path / "e", MiB, [(0, b"a")], stream_hash=False)
    assert digest is None
