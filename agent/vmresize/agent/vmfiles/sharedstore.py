"""Is the destination's storage the same filesystem as ours? Nova's marker-file test.

The destination's Prepare writes a marker with an unguessable content under the new
instance directory (:func:`mark`); the source's MigrateDisk looks for it under its own
storage root at the same relative path (:func:`visible`). Seen: the two roots are one
shared filesystem (or it is a same-host resize), so the files are copied within it and
nothing crosses the network. Not seen: the copy goes over the migration service. The
marker's name comes from the resize's transfer id, which both steps carry; Finish and
CleanupDest remove it (:func:`clear`), so a resumed MigrateDisk still finds it.

Every path goes through :func:`~vmresize.agent.paths.confine`; a symlink is never a marker.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import stat
from pathlib import Path

from vmresize.agent.errors import PathEscapeError
from vmresize.agent.paths import confine, open_nofollow

MARKER_PREFIX = ".vmresize-shared-"
_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


def marker_rel(dest_dir: str, transfer_id: str) -> str:
    """Where the marker of ``transfer_id`` lives, relative to the storage root."""
    return posixpath.join(dest_dir, MARKER_PREFIX + transfer_id)


def _path(root: Path, dest_dir: str, transfer_id: str) -> Path:
    """The marker's path, its last component not resolved (a link there stays a link)."""
    if not _ID.fullmatch(transfer_id):
        raise PathEscapeError(f"bad transfer id {transfer_id!r}")
    confine(root, marker_rel(dest_dir, transfer_id))
    return confine(root, dest_dir) / (MARKER_PREFIX + transfer_id)


def mark(root: Path, dest_dir: str, transfer_id: str) -> Path:
    """Destination: write the marker (idempotent: an existing one is kept)."""
    path = _path(root, dest_dir, transfer_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return path
    try:
        os.write(fd, secrets.token_hex(16).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def visible(root: Path, dest_dir: str, transfer_id: str) -> bool:
    """Source: whether the destination's marker is here (a regular file, not a link)."""
    path = _path(root, dest_dir, transfer_id)
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def clear(root: Path, dest_dir: str, transfer_id: str) -> None:
    """Remove the marker (Finish, CleanupDest); absent is fine."""
    with contextlib.suppress(FileNotFoundError):
        _path(root, dest_dir, transfer_id).unlink()
