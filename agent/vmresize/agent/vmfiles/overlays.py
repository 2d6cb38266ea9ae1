"""Pre-copy overlays as files: committing one into the disk below it (``qemu-img``).

Used by the destination's Finish (:func:`merge_arrived`, after verification) and by the
source's RestoreSource when the domain is gone (:func:`commit_offline`). Formats are
given, never probed; every path is confined to the storage root.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vmresize.agent.errors import DiskError, StepError
from vmresize.agent.paths import confine
from vmresize.agent.vmfiles import disks
from vmresize.api.vmdisks import DiskRole, VMDisk


def _qemu_img(argv: list[str]) -> None:
    try:
        proc = subprocess.run(["qemu-img", *argv], capture_output=True, text=True,
                              timeout=disks.QEMU_IMG_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"qemu-img {argv[0]}: {e}", retryable=True) from e
    if proc.returncode != 0:
        raise DiskError(f"qemu-img {argv[0]} failed: {proc.stderr.strip()}")


def commit_offline(root: Path, overlay_rel: str) -> None:
    """Merge an overlay into the file below it (as its header names it) and delete it.
    Idempotent: a commit cut short is redone with the same data."""
    path = confine(root, overlay_rel)
    if path.exists():
        # -d: the overlay is deleted next, so emptying it first would be writes (and a
        # flush) for nothing; a commit redone after a crash writes the same data again.
        _qemu_img(["commit", "-q", "-d", "-f", "qcow2", str(path)])
        path.unlink()


def merge_arrived(root: Path, files: list[VMDisk]) -> None:
    """Destination, after verification: re-link each overlay onto its received disk
    (``rebase -u``: the same data, moved) and commit it into it. Blocking. Each overlay
    has its own disk below it, so they are merged at once (the VM is down meanwhile)."""
    fmt = {f.path: f.format for f in files}
    todo = [f for f in files
            if f.role is DiskRole.OVERLAY and confine(root, f.path).exists()]
    for f in todo:
        if not f.backing or f.backing not in fmt:
            raise StepError(f"overlay {f.path} has no disk below it in the list",
                            retryable=False)

    def merge(f: VMDisk) -> None:
        disks.rebase(root, f.path, "qcow2", f.backing or "", fmt[f.backing or ""])
        commit_offline(root, f.path)

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        list(pool.map(merge, todo))   # the first failure is raised, after all ended
