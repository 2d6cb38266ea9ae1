"""The pre-copy record (``<root disk>.precopy``) as :class:`markers.PreCopy`: a record an
older agent wrote, byte for byte as it wrote it, loads and is written back unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmresize.agent.errors import StepError
from vmresize.agent.vmfiles import markers
from vmresize.api.vmdisks import DiskRole, VMDisk

ROOT_DISK = "instances/root.qcow2"
OVERLAY = "instances/root.qcow2.vmresize-overlay.qcow2"

# Written by the dict-handling code before PreCopy (json.dumps(doc, sort_keys=True) + "\n"),
# once the live copy had ended: the one file sent, with its checksum and transfer id.
OLD_AFTER_COPY = (
    '{"overlays": {"vda": "instances/root.qcow2.vmresize-overlay.qcow2"}, "sent": '
    '[{"backing": null, "checksum": "xxh3-128:0123456789abcdef0123456789abcdef", '
    '"format": "qcow2", "path": "instances/root.qcow2", "peerPath": "instances/root.qcow2", '
    '"role": "Disk", "sizeBytes": 1048576, "sourcePath": "/var/lib/vm/instances/root.qcow2", '
    '"target": "vda", "transferId": "t-1-0", "use": null}], "transfer": "t-1"}\n')
# The same record as written before the overlays were made (nothing sent yet).
OLD_BEFORE_COPY = ('{"overlays": {"vda": "instances/root.qcow2.vmresize-overlay.qcow2", '
                   '"vdb": "instances/data.qcow2.vmresize-overlay.qcow2"}, "sent": [], '
                   '"transfer": "t-2"}\n')


def _old(root: Path, text: str) -> None:
    (root / "instances").mkdir(exist_ok=True)
    (root / (ROOT_DISK + markers.PRECOPY_SUFFIX)).write_text(text)


def test_an_old_record_after_the_live_copy_loads_and_writes_back_byte_for_byte(
        tmp_path: Path) -> None:
    _old(tmp_path, OLD_AFTER_COPY)
    rec = markers.read_precopy(tmp_path, ROOT_DISK)
    assert rec is not None
    assert rec.transfer == "t-1"
    assert dict(rec.overlays) == {"vda": OVERLAY}
    assert rec.sent == (VMDisk(path=ROOT_DISK, role=DiskRole.DISK, format="qcow2",
                               target="vda", size_bytes=1048576, peer_path=ROOT_DISK,
                               transfer_id="t-1-0",
                               checksum="xxh3-128:0123456789abcdef0123456789abcdef",
                               source_path="/var/lib/vm/instances/root.qcow2"),)
    markers.write_precopy(tmp_path, ROOT_DISK, rec)
    assert (tmp_path / (ROOT_DISK + markers.PRECOPY_SUFFIX)).read_text() == OLD_AFTER_COPY


def test_an_old_record_before_the_live_copy_resumes_into_the_old_format(
        tmp_path: Path) -> None:
    _old(tmp_path, OLD_BEFORE_COPY)
    rec = markers.read_precopy(tmp_path, ROOT_DISK)
    assert rec is not None
    assert rec.sent == ()
    assert rec.transfer == "t-2"
    assert list(rec.overlays) == ["vda", "vdb"]
    assert rec.text() == OLD_BEFORE_COPY
    # what the live copy's end writes is what the old code wrote then
    after = markers.PreCopy.parse(OLD_AFTER_COPY, tmp_path)
    fresh = markers.PreCopy(transfer="t-1", overlays={"vda": OVERLAY}).with_sent(
        list(after.sent))
    assert fresh.text() == OLD_AFTER_COPY


def test_no_record_is_none_and_removal_forgets_it(tmp_path: Path) -> None:
    assert markers.read_precopy(tmp_path, ROOT_DISK) is None
    _old(tmp_path, OLD_BEFORE_COPY)
    markers.remove_precopy(tmp_path, ROOT_DISK)
    assert markers.read_precopy(tmp_path, ROOT_DISK) is None


@pytest.mark.parametrize("text", [
    "{not json", "[]", '{"overlays": {}}', '{"transfer": "t", "overlays": ["vda"]}',
    '{"transfer": 3, "overlays": {}}',
    '{"transfer": "t", "overlays": {}, "sent": [{"path": ""}]}',
])
def test_a_record_that_is_not_one_stops_the_step_and_names_the_file(
        tmp_path: Path, text: str) -> None:
    _old(tmp_path, text)
    with pytest.raises(StepError, match=r"root\.qcow2\.precopy is not a pre-copy record") as e:
        markers.read_precopy(tmp_path, ROOT_DISK)
    assert not e.value.retryable
