"""Extents, the disk checksum (content-only, holes free) and sizes of sparse files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tests.support.checksum import reference_disk_checksum

from vmresize.agent.transfer.sparse import (
    DIGEST_BLOCK,
    DiskDigest,
    Extent,
    SparseSink,
    allocated_bytes,
    apparent_size,
    disk_checksum,
    disk_checksum_fd,
    iter_extents,
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
    {DIGEST_BLOCK - 1: b"ab", 7 * MiB: bytes(MiB) + b"c"},  # straddles, explicit zeros
])
def test_checksum_follows_its_definition(tmp_path: Path, layout: dict[int, bytes]) -> None:
    p = tmp_path / "d"
    make_sparse(p, 20 * MiB + 5, layout)
    assert disk_checksum(p) == reference_disk_checksum(p.read_bytes())


def test_checksum_is_pinned_and_names_its_algorithm(tmp_path: Path) -> None:
    """Known answers: checksums are stored (status, the receiver's sidecar) and compared
    across agents, so the definition may change only with a new prefix, magic and transfer
    protocol version, never silently."""
    content = bytearray(3 * DIGEST_BLOCK + 1)
    content[DIGEST_BLOCK: DIGEST_BLOCK + 8] = b"vmresize"
    content[-1] = 1
    p = tmp_path / "d"
    p.write_bytes(bytes(content))
    assert disk_checksum(p) == "xxh3-128:df01df108197261b0b498907435ade4c"
    p.write_bytes(bytes(5))
    assert disk_checksum(p) == "xxh3-128:916787d6f159eb710923113d948ec688"
    assert reference_disk_checksum(b"") == "xxh3-128:4b5bb53bf2b6f1575e7d6e0457db8650"


def test_checksum_ignores_the_hole_layout(tmp_path: Path) -> None:
    """Decided: the checksum is a function of (size, bytes) only. A destination's holes
    differ from the source's (the sender skips all-zero chunks, filesystems round
    extents), so holes and explicit zeros must hash alike, or verification would fail."""
    data = os.urandom(300_000)
    holes, zeros, dense = tmp_path / "holes", tmp_path / "zeros", tmp_path / "dense"
    make_sparse(holes, 8 * MiB, {3 * MiB + 11: data})
    make_sparse(zeros, 8 * MiB, {0: bytes(3 * MiB + 11), 3 * MiB + 11: data,
                                 3 * MiB + 11 + len(data): bytes(MiB)})
    dense.write_bytes(holes.read_bytes())  # no holes at all
    assert allocated_bytes(holes) < allocated_bytes(zeros) < allocated_bytes(dense)
    assert disk_checksum(holes) == disk_checksum(zeros) == disk_checksum(dense)


def test_checksum_catches_any_changed_byte_and_the_size(tmp_path: Path) -> None:
    p = tmp_path / "d"
    size = 4 * MiB + 3
    content = bytearray(size)
    content[MiB: 2 * MiB] = os.urandom(MiB)
    make_sparse(p, size, {MiB: bytes(content[MiB: 2 * MiB])})
    base = disk_checksum(p)
    # first, middle and last data byte; a byte in a hole; the file's very first and last
    for at in (MiB, MiB + DIGEST_BLOCK + 17, 2 * MiB - 1, 3 * MiB, 0, size - 1):
        fd = os.open(p, os.O_RDWR)
        try:
            os.pwrite(fd, bytes([content[at] ^ 0x01]), at)
            assert disk_checksum_fd(fd) != base, at
            os.pwrite(fd, bytes([content[at]]), at)
            assert disk_checksum_fd(fd) == base, at
        finally:
            os.close(fd)
    os.truncate(p, size + 1)  # one more zero byte is another disk
    assert disk_checksum(p) != base


def test_a_zero_block_moved_elsewhere_changes_the_checksum(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    block = os.urandom(DIGEST_BLOCK)
    make_sparse(a, MiB, {0: block})
    make_sparse(b, MiB, {DIGEST_BLOCK: block})  # same blocks, other offsets
    assert disk_checksum(a) != disk_checksum(b)


def test_streamed_digest_is_independent_of_the_chunking(tmp_path: Path) -> None:
    size = 3 * MiB + 77
    content = bytearray(size)
    content[5: 2 * MiB] = os.urandom(2 * MiB - 5)
    expected = reference_disk_checksum(bytes(content))
    for step in (1000, DIGEST_BLOCK, DIGEST_BLOCK + 1, 4 * MiB):
        d = DiskDigest(size)
        for off in range(0, size, step):
            # leave gaps (every third piece) where the content is zeros anyway
            if off % (3 * step) != step or any(content[off: off + step]):
                d.update(off, content[off: off + step])
        assert d.hexdigest() == expected, step


def test_streamed_digest_refuses_out_of_order_and_overflow() -> None:
    d = DiskDigest(MiB)
    d.update(100, b"x")
    with pytest.raises(ValueError, match="after 101"):
        d.update(0, b"y")
    with pytest.raises(ValueError, match="size 1048576"):
        d.update(MiB - 1, b"zz")


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
    readback = sink.call(disk_checksum_fd).result(timeout=30)
    closed: list[bool] = []
    sink.close(lambda: closed.append(True))
    for _ in range(3000):
        if closed:
            break
        time.sleep(0.01)
    assert closed == [True]
    assert readback == reference_disk_checksum(path.read_bytes())
    return digest, seen


def test_sink_streams_the_checksum_of_the_whole_sparse_image(tmp_path: Path) -> None:
    p = tmp_path / "d"
    size = 12 * MiB + 5
    writes = [(MiB, os.urandom(300_000)), (4 * MiB, os.urandom(MiB)), (size - 5, b"tail!")]
    digest, seen = _sink_write(p, size, writes)
    assert digest == reference_disk_checksum(p.read_bytes())
    assert seen == [(off, len(data)) for off, data in writes]
    assert allocated_bytes(p) < 4 * MiB  # holes stayed holes


def test_sink_out_of_order_writes_give_no_streamed_digest(tmp_path: Path) -> None:
    digest, _ = _sink_write(tmp_path / "d", 4 * MiB, [(MiB, b"b" * 10), (0, b"a" * 10)])
    assert digest is None
    digest, _ = _sink_write(tmp_path / "e", MiB, [(0, b"a")], stream_hash=False)
    assert digest is None
