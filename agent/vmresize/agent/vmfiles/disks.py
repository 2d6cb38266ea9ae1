"""Disk files of instances: create (blank, from a base image, ephemeral, swap), grow,
inspect, seed, re-link.

The format of a disk is always given (it comes from the domain XML) and passed to
``qemu-img`` with ``-f``/``-F``: a format is never probed, since a guest can write a qcow2
header into a raw disk (whose "backing file" could then name any host file). A backing
chain is read only where every layer records its backing format.

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
import shutil
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


FORMATS = ("raw", "qcow2")


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise DiskError(f"unsupported disk format {fmt!r}")
    return fmt


def info(root: Path, rel: str, fmt: str = "qcow2") -> DiskInfo:
    """Virtual and allocated size of a disk read as ``fmt``."""
    path = confine(root, rel)
    if not path.is_file():
        raise DiskError(f"no disk at {rel}")
    doc = json.loads(_run(["qemu-img", "info", "--output=json", "-U", "-f", _fmt(fmt),
                           str(path)]))
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


BASE_FORMATS = {".qcow2": "qcow2", ".raw": "raw"}
"""A base image's format is declared by its name (never probed from its bytes)."""


def base_format(name: str) -> str:
    """The format a base image's file name declares; any other name is refused."""
    for ext, fmt in BASE_FORMATS.items():
        if name.endswith(ext) and len(name) > len(ext):
            return fmt
    raise DiskError(f"base image {name!r} does not declare its format: name it *.qcow2 "
                    "or *.raw (formats are never probed)")


def create_from_base(root: Path, rel: str, base_rel: str, size_gib: int,
                     base_fmt: str | None = None) -> Path:
    """Copy a base image (read as ``base_fmt``, by default what its name declares) into a
    standalone qcow2, then grow it."""
    final = confine(root, rel)
    if final.exists():
        return final
    base = confine(root, base_rel)
    fmt = _fmt(base_fmt or base_format(base.name))
    if not base.is_file():
        raise DiskError(f"no base image at {base_rel}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    _run(["qemu-img", "convert", "-q", "-f", fmt, "-O", "qcow2", str(base), str(tmp)])
    tmp_rel = str(tmp.relative_to(root.resolve()))
    if info(root, tmp_rel, "qcow2").virtual_size < size_gib * GIB:
        _run(["qemu-img", "resize", "-q", "-f", "qcow2", str(tmp), str(size_gib * GIB)])
    _commit(tmp, final)
    return final


def create_empty(root: Path, rel: str, fmt: str, size_bytes: int) -> Path:
    """A blank sparse disk of ``size_bytes`` (an ephemeral disk); a no-op if it exists."""
    final = confine(root, rel)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    _run(["qemu-img", "create", "-q", "-f", _fmt(fmt), str(tmp), str(size_bytes)])
    _commit(tmp, final)
    return final


MKSWAP = ("mkswap", "/usr/sbin/mkswap", "/sbin/mkswap")


def create_swap(root: Path, rel: str, size_bytes: int) -> Path:
    """A raw sparse swap disk of ``size_bytes`` with a swap signature, as Nova makes it (no
    label: a guest finds it by its device or serial); a no-op if it exists."""
    final = confine(root, rel)
    if final.exists():
        return final
    tool = next((t for t in (shutil.which(m) for m in MKSWAP) if t), None)
    if tool is None:
        raise DiskError("mkswap (util-linux) is not installed; cannot make a swap disk")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    with tmp.open("wb") as f:
        f.truncate(size_bytes)
    _run([tool, "-q", str(tmp)])
    _commit(tmp, final)
    return final


def grow(root: Path, rel: str, size_gib: int, fmt: str = "qcow2") -> int:
    """Grow the disk to ``size_gib`` (never shrinks); return the resulting virtual size.

    Fails on a disk QEMU holds open (``qemu-img`` takes a write lock): grow before start.
    """
    path = confine(root, rel)
    current = info(root, rel, fmt).virtual_size
    target = size_gib * GIB
    if current >= target:
        return current
    _run(["qemu-img", "resize", "-q", "-f", _fmt(fmt), str(path), str(target)])
    return target


def backing_chain(root: Path, rel: str, fmt: str) -> list[tuple[Path, str]]:
    """The files below ``rel`` (nearest first) with their formats, as recorded in each
    layer's header; a layer whose backing format is not recorded is refused (reading it
    would mean probing). Every layer must lie under the root."""
    path = confine(root, rel)
    if fmt == "raw":
        return []  # a raw file has no header to name a backing file
    doc = json.loads(_run(["qemu-img", "info", "--output=json", "-U", "--backing-chain",
                           "-f", _fmt(fmt), str(path)]))
    chain: list[tuple[Path, str]] = []
    real_root = root.resolve()
    for layer in doc:
        below = layer.get("full-backing-filename") or layer.get("backing-filename")
        if not below:
            break
        below_fmt = layer.get("backing-filename-format")
        if not below_fmt:
            raise DiskError(f"{layer.get('filename')} names backing file {below} without "
                            "its format; formats are never probed")
        below_path = Path(below)
        if not below_path.is_absolute():
            below_path = Path(str(layer.get("filename"))).parent / below_path
        if not below_path.resolve().is_relative_to(real_root):
            raise DiskError(f"backing file {below} is outside the storage root")
        chain.append((confine(root, str(below_path.resolve().relative_to(real_root))),
                      _fmt(str(below_fmt))))
    return chain


def rebase(root: Path, rel: str, fmt: str, backing_rel: str, backing_fmt: str) -> None:
    """Point ``rel`` at ``backing_rel`` (same data, moved: ``-u`` only rewrites the header;
    the path is written relative to the overlay, as both live in one directory tree)."""
    path = confine(root, rel)
    below = confine(root, backing_rel)
    _run(["qemu-img", "rebase", "-q", "-u", "-f", _fmt(fmt), "-F", _fmt(backing_fmt),
          "-b", os.path.relpath(below, path.parent), str(path)])


def copy_local(root: Path, src_rel: str, dst_rel: str) -> Path:
    """Copy a file within the storage root (shared storage: no network), sparse, via a
    temporary name; a no-op if the target exists (resumed)."""
    src, final = confine(root, src_rel), confine(root, dst_rel)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    _run(["cp", "--sparse=always", "--reflink=auto", "--", str(src), str(tmp)])
    _commit(tmp, final)
    return final


def read_head(root: Path, rel: str, length: int = SEED_BLOCK, fmt: str = "qcow2") -> bytes:
    """The first ``length`` bytes of the disk's *guest-visible* data (for checks and demos)."""
    path = confine(root, rel)
    with tempfile.TemporaryDirectory() as tmpdir:
        out = Path(tmpdir) / "head.raw"
        _run(["qemu-img", "dd", "-U", "-f", _fmt(fmt), "-O", "raw", "bs=512",
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
