"""qcow2 disk files of instances: create, copy from a base image, grow, inspect, seed.

Every path is relative to the storage root and goes through
:func:`vmresize.agent.paths.confine`; every tool runs as an argv list (no shell). New
files are built under a temporary name next to the target and renamed into place, so a
crash never leaves a half-made disk under the final name (what makes Spawn idempotent).
Failures become :class:`~vmresize.agent.errors.DiskError` (``retryable`` only for what a
retry can fix).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmresize.agent.errors import DiskError
from vmresize.agent.paths import confine

GIB = 1024 ** 3
SEED_BLOCK = 512  # the seed text fills (at most) the first sector
QEMU_IMG_TIMEOUT = 600.0  # a qcow2 convert of a large base image on slow storage


@dataclass(frozen=True)
class DiskInfo:
    """What ``qemu-img info`` says about a disk."""

    virtual_size: int
    actual_size: int
    format: str


def _run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DiskError(f"{argv[0]} {argv[1]}: {e}", retryable=True) from e
    if proc.returncode != 0:
        raise DiskError(f"{' '.join(argv[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def _tmp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _commit(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def info(root: Path, rel: str) -> DiskInfo:
    """Virtual and allocated size and format of a disk."""
    path = confine(root, rel)
    if not path.is_file():
        raise DiskError(f"no disk at {rel}")
    doc = json.loads(_run(["qemu-img", "info", "--output=json", "-U", str(path)]))
    return DiskInfo(int(doc["virtual-size"]), int(doc.get("actual-size", 0)),
                    str(doc.get("format", "")))


def create_blank(root: Path, rel: str, size_gib: int, *, seed: str | None = None) -> Path:
    """Create a blank qcow2 of ``size_gib`` (optionally starting with ``seed`` text).

    A no-op if the disk already exists (the step is being resumed).
    """
    final = confine(root, rel)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    size = str(size_gib * GIB)
    if seed is None:
        _run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), size])
    else:
        data = seed.encode()
        if len(data) > SEED_BLOCK:
            raise DiskError(f"seed pattern longer than {SEED_BLOCK} bytes")
        with tempfile.NamedTemporaryFile(dir=final.parent, prefix=".seed-") as raw:
            raw.write(data.ljust(SEED_BLOCK, b"\0"))
            raw.flush()
            _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw.name, str(tmp)])
        _run(["qemu-img", "resize", "-q", "-f", "qcow2", str(tmp), size])
    _commit(tmp, final)
    return final


def create_from_base(root: Path, rel: str, base_rel: str, size_gib: int) -> Path:
    """Copy a base image (any format qemu-img reads) into a standalone qcow2, then grow it."""
    final = confine(root, rel)
    if final.exists():
        return final
    base = confine(root, base_rel)
    if not base.is_file():
        raise DiskError(f"no base image at {base_rel}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    _run(["qemu-img", "convert", "-q", "-O", "qcow2", str(base), str(tmp)])
    tmp_rel = str(tmp.relative_to(root.resolve()))
    if info(root, tmp_rel).virtual_size < size_gib * GIB:
        _run(["qemu-img", "resize", "-q", "-f", "qcow2", str(tmp), str(size_gib * GIB)])
    _commit(tmp, final)
    return final


def grow(root: Path, rel: str, size_gib: int) -> int:
    """Grow the disk to ``size_gib`` (never shrinks); return the resulting virtual size.

    Fails on a disk QEMU holds open (``qemu-img`` takes a write lock): grow before start.
    """
    path = confine(root, rel)
    current = info(root, rel).virtual_size
    target = size_gib * GIB
    if current >= target:
        return current
    _run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(target)])
    return target


def read_head(root: Path, rel: str, length: int = SEED_BLOCK) -> bytes:
    """The first ``length`` bytes of the disk's *guest-visible* data (for checks and demos)."""
    path = confine(root, rel)
    with tempfile.TemporaryDirectory() as tmpdir:
        out = Path(tmpdir) / "head.raw"
        _run(["qemu-img", "dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512",
              f"count={max(1, -(-length // 512))}", f"if={path}", f"of={out}"])
        return out.read_bytes()[:length]


def remove(root: Path, rel: str) -> bool:
    """Delete a disk and its empty parent directories up to the root; True if it existed."""
    path = confine(root, rel)
    existed = path.exists()
    if existed:
        path.unlink()
    real_root = root.resolve()
    parent = path.parent
    while parent != real_root and parent.is_relative_to(real_root):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return existed
