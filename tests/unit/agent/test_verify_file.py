"""Finish's check of an arrived file (invariant 2): what it trusts and what it reads again.

The receiver's own verification (its state complete, with the very checksum Finish expects)
is accepted; every other case reads the file and compares its disk checksum.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.checksum import file_disk_checksum

from vmresize.agent.errors import CopyChecksumMismatchError, StepError
from vmresize.agent.transfer.seam import Received
from vmresize.agent.vmfiles.moving import verify_file

REL = "instances/ns/vm/1/disk.qcow2"


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "disk.qcow2"
    path.write_bytes(b"\0" * 65536 + b"data" * 4096)
    return path, file_disk_checksum(path)


async def test_a_missing_file_is_retryable(tmp_path: Path) -> None:
    for state, why in ((None, "is missing"),
                       (Received(complete=False, checksum=None), "not completely received")):
        with pytest.raises(StepError, match=why) as err:
            await verify_file(tmp_path / "nope", REL, "0" * 64, state)
        assert err.value.retryable


async def test_a_right_file_passes_whichever_way_it_came(disk: tuple[Path, str]) -> None:
    path, checksum = disk
    for state in (None, Received(complete=False, checksum=None),  # shared storage: state open
                  Received(complete=True, checksum=checksum)):
        await verify_file(path, REL, checksum, state)


async def test_a_changed_file_is_caught_unless_the_receiver_verified_that_checksum(
        disk: tuple[Path, str]) -> None:
    path, checksum = disk
    with path.open("r+b") as f:
        f.seek(70000)
        f.write(b"X")
    for state in (None, Received(complete=False, checksum=None),
                  Received(complete=True, checksum="another checksum")):
        with pytest.raises(CopyChecksumMismatchError):
            await verify_file(path, REL, checksum, state)
    # The receiver hashed what it wrote before the commit: Finish takes its word.
    await verify_file(path, REL, checksum, Received(complete=True, checksum=checksum))
