"""Copies an admin abandoned on this host: destroyed, never started.

When a destination never came back, an admin abandoned it (``VMResize.spec.
abandonDestination``) and the operator recorded the copy left here in this Host's
``status.orphans`` before it started the VM on its source again. That record is a fence
this agent keeps: at startup (before it takes any task), every few seconds while it runs
(a Finish frozen between its owner check and its start could still start the copy), and
right before any domain start, it reads the records not yet cleaned, and

* never starts a domain named by one (:func:`fenced`);
* destroys and undefines that domain, but only while its disk lies in the copy's own
  directory (a domain of that name on another disk is another copy: left alone), then
  deletes that directory (:func:`reap`), and the caller marks the record cleaned.

The directory must be the one the operator makes for one placement
(``instances/<ns>/<instance>/<resize UID>``, see :func:`vmresize.api.naming.disk_path`):
a record whose directory is not named after its resize's UID is refused, so no record can
make the agent delete anything else under the storage root.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from vmresize.agent.errors import DomainNotFoundError, PathEscapeError
from vmresize.agent.hypervisor.timed import TimedHypervisor
from vmresize.agent.paths import confine
from vmresize.api.host import OrphanCopy

log = logging.getLogger(__name__)


def fenced(orphans: Iterable[OrphanCopy], name: str) -> str | None:
    """Why ``name`` must not be started here (None: it may)."""
    for o in orphans:
        if o.cleaned_at is None and o.domain_name == name:
            return (f"domain {name} is the copy that {o.owner} abandoned on {o.host} at "
                    f"{o.abandoned_at.isoformat()}; it is destroyed, never started")
    return None


def copy_dir(root: Path, o: OrphanCopy) -> Path:
    """The copy's own directory, confined to the storage root and named after its resize's
    UID (anything else is refused: :class:`PathEscapeError`)."""
    if PurePosixPath(o.disk_dir).name != o.owner_uid or \
            PurePosixPath(o.disk_path).parent != PurePosixPath(o.disk_dir):
        raise PathEscapeError(f"orphan of {o.owner}: {o.disk_dir!r} is not the directory of one "
                         f"placement of {o.owner_uid} holding {o.disk_path!r}")
    return confine(root, o.disk_dir)


async def reap(hv: TimedHypervisor, root: Path, o: OrphanCopy) -> str:
    """Destroy and undefine the abandoned copy (if it is the one in its directory) and delete
    that directory; idempotent. Returns what was done, for the log."""
    where = copy_dir(root, o)
    done = []
    if await hv.exists(o.domain_name):
        disk = await hv.disk_path(o.domain_name)
        if disk is not None and disk.resolve().is_relative_to(where):
            try:
                await hv.destroy(o.domain_name)
                await hv.undefine(o.domain_name)
                done.append(f"destroyed and undefined {o.domain_name}")
            except DomainNotFoundError:
                pass
        else:
            log.warning("domain %s runs from %s, not from the abandoned copy in %s: another "
                        "copy, left alone", o.domain_name, disk, o.disk_dir)
    if where.exists():
        shutil.rmtree(where)
        done.append(f"deleted {o.disk_dir}")
    return "; ".join(done) or "nothing left"
