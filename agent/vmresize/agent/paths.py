"""Confinement of relative paths under a host's storage root.

Every agent module that touches files turns a relative path (which may come from a
HostTask, i.e. from a user-controlled object) into a real path with :func:`confine`.

``confine`` refuses an empty path, an absolute path, NUL bytes, ``..`` components and any
symlink (in any component, including the last, dangling or not) that resolves outside the
root. The returned path is fully resolved and lies strictly inside ``root.resolve()``.
Callers that create files should still open them with ``O_NOFOLLOW`` (a symlink can appear
between the check and the open); :func:`open_nofollow` does that.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

from vmresize.agent.errors import PathEscapeError

__all__ = ["PathEscapeError", "confine", "open_nofollow"]


def confine(root: Path, rel: str) -> Path:
    """Resolve ``rel`` under ``root``; raise :class:`PathEscapeError` if it could leave the root."""
    if not isinstance(rel, str) or not rel:
        raise PathEscapeError(f"empty or non-string path: {rel!r}")
    if "\x00" in rel:
        raise PathEscapeError("path contains a NUL byte")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith("/"):
        raise PathEscapeError(f"absolute path refused: {rel!r}")
    if any(part == ".." for part in rel.split("/")):
        raise PathEscapeError(f"'..' component refused: {rel!r}")
    real_root = root.resolve(strict=True)
    # resolve() follows every symlink that exists (also a dangling last one); the parts that
    # do not exist yet are kept literally and cannot climb, since '..' is refused above.
    target = (real_root / pure).resolve(strict=False)
    if target == real_root or not target.is_relative_to(real_root):
        raise PathEscapeError(f"path resolves outside the storage root: {rel!r}")
    return target


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` with ``O_NOFOLLOW | O_CLOEXEC``; PathEscapeError if ``path`` is a
    symlink."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:  # the last component is a symlink
            raise PathEscapeError(f"refusing to follow a symlink: {path}") from e
        raise
