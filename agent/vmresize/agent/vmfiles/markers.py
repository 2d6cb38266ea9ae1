"""Records the executor keeps on disk next to an instance disk, so a resumed step knows
what an earlier attempt did (all under the storage root, written atomically).

* ``<disk>.poweroff``: who asked the VM to power off, when (wall clock) and the grace it
  was given. It is tagged with the resize (owner UID and transfer id): a marker an earlier
  resize left behind is someone else's and is replaced, so it can never make a new
  power-off immediate and hard. While it stands, a power-off may be under way in the
  guest: RestoreSource finishes it before it starts the VM again.
* ``<disk>.verified``: the checksums Finish verified before growing the disk. It stays while
  the copy lives on this host (deleted with the disk), so a resumed Finish or one that finds
  the domain already defined can tell the verified disk from any other.
* ``<disk>.precopy``: pre-copy's record (the overlays made, the files sent live), a
  :class:`PreCopy` read and written only by :func:`read_precopy` and :func:`write_precopy`.
* ``<disk>.held.xml``: the source domain's own definition while a resize holds the source.
  MigrateDisk moves it aside after the power-off (the domain is undefined, so nothing can
  start the source by accident; the disk keeps its path and bytes), RestoreSource defines it
  again exactly, Confirm deletes it with the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from vmresize.agent.errors import StepError
from vmresize.agent.paths import confine, open_nofollow
from vmresize.api.vmdisks import OVERLAY_SUFFIX, VMDisk

POWEROFF_SUFFIX = ".poweroff"
VERIFIED_SUFFIX = ".verified"
HELD_SUFFIX = ".held.xml"
PRECOPY_SUFFIX = ".precopy"
"""Beside the source's root disk: what pre-copy did (:mod:`vmresize.agent.steps.precopy`)."""
ALL_SUFFIXES = (POWEROFF_SUFFIX, VERIFIED_SUFFIX, HELD_SUFFIX, PRECOPY_SUFFIX,
                OVERLAY_SUFFIX)
"""Everything deleted with a disk (a pre-copy overlay beside it too)."""


def sidecar(root: Path, rel: str, suffix: str) -> Path:
    """The marker file ``<rel><suffix>`` beside a disk, confined to the storage root."""
    return confine(root, rel + suffix)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (no symlinks)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(path: Path) -> str | None:
    """A marker's text, or None when there is none."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def remove(path: Path) -> None:
    """Delete a marker; a missing one is already gone."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclass(frozen=True)
class PowerOff:
    """Contents of a ``.poweroff`` marker."""

    tag: str
    requested_at: float
    grace: float | None = None
    """Seconds the guest was given to shut down before it is forced off (None: a marker
    written before the grace was recorded)."""
    stopped_at: float | None = None
    """When the domain was seen shut off (the downtime's start); None until then."""

    def text(self) -> str:
        """The marker's file contents: ``<tag> <requested_at> [<grace>|- [<stopped_at>]]``."""
        out = f"{self.tag} {self.requested_at:.6f}"
        if self.grace is not None or self.stopped_at is not None:
            out += " -" if self.grace is None else f" {self.grace:.3f}"
        if self.stopped_at is not None:
            out += f" {self.stopped_at:.6f}"
        return out + "\n"

    @classmethod
    def parse(cls, text: str | None) -> PowerOff | None:
        """None for a missing or malformed marker (an untagged one is never trusted)."""
        parts = (text or "").split()
        if len(parts) not in (2, 3, 4):
            return None
        try:
            grace = float(parts[2]) if len(parts) > 2 and parts[2] != "-" else None
            stopped = float(parts[3]) if len(parts) > 3 else None
            return cls(parts[0], float(parts[1]), grace, stopped)
        except ValueError:
            return None

    def of_owner(self, owner_uid: str | None) -> bool:
        """Whether the resize with ``owner_uid`` wrote it (the tag is ``<uid>/<transfer>``)."""
        return self.tag.startswith(f"{owner_uid or '-'}/")


def power_off_since(path: Path, tag: str, now: float, grace: float | None = None) -> float:
    """When the power-off for ``tag`` was first requested; records ``now`` (and ``grace``)
    if it never was (or only for another resize)."""
    mine = PowerOff.parse(read(path))
    if mine is not None and mine.tag == tag:
        return mine.requested_at
    write_atomic(path, PowerOff(tag, now, grace).text())
    return now


def stopped_since(path: Path, tag: str, seen_off: float) -> float:
    """When the domain of the power-off for ``tag`` stopped: the first recorded moment it
    was seen shut off, else ``seen_off`` (recorded now). Kept across agent restarts, so a
    resumed step reports the moment the VM really stopped, not when it looked again."""
    mine = PowerOff.parse(read(path))
    if mine is None or mine.tag != tag:
        raise ValueError(f"{path}: no power-off requested for {tag}")
    if mine.stopped_at is not None:
        return mine.stopped_at
    write_atomic(path, PowerOff(tag, mine.requested_at, mine.grace, seen_off).text())
    return seen_off


def verified_is(path: Path, checksum: str) -> bool:
    """Whether the ``.verified`` record says the disk was checked against ``checksum``."""
    return (read(path) or "").strip() == checksum


@dataclass(frozen=True)
class PreCopy:
    """Contents of a ``.precopy`` record: what pre-copy did for one move.

    On disk it is the JSON object ``{"overlays": {target: path}, "sent": [VMDisk],
    "transfer": id}`` with sorted keys and a final newline, as the agent has always written
    it: a record an older agent left behind is resumed or merged back by this one.
    """

    transfer: str | None
    """The move that made the overlays (the task's ``transfer_id``); another move's record
    is never resumed."""
    overlays: Mapping[str, str]
    """Guest target (``vda``) to the overlay's path under the storage root."""
    sent: tuple[VMDisk, ...] = field(default=())
    """The files sent while the VM ran, with their checksums (empty: not yet)."""

    def with_sent(self, sent: list[VMDisk]) -> PreCopy:
        """The record once the live copy has ended."""
        return replace(self, sent=tuple(sent))

    def text(self) -> str:
        """The record's file contents."""
        doc = {"transfer": self.transfer, "overlays": dict(self.overlays),
               "sent": [f.model_dump(mode="json", by_alias=True) for f in self.sent]}
        return json.dumps(doc, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, text: str, where: Path) -> PreCopy:
        """The record in ``text``; StepError (not retryable) naming ``where`` if it is not
        one: overlays it cannot name are for a person to look at, not to guess."""
        try:
            doc = json.loads(text)
            overlays = doc["overlays"]
            transfer = doc["transfer"]
            if not (isinstance(transfer, str | None) and isinstance(overlays, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in overlays.items())):
                raise TypeError("transfer or overlays of the wrong type")
            sent = tuple(VMDisk.model_validate(d) for d in doc.get("sent", []))
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as e:
            raise StepError(f"{where} is not a pre-copy record ({e}); its overlays, if "
                            "any, need a person", retryable=False) from e
        return cls(transfer=transfer, overlays=dict(overlays), sent=sent)


def read_precopy(root: Path, rel: str) -> PreCopy | None:
    """The pre-copy record beside the root disk ``rel``, if any."""
    path = sidecar(root, rel, PRECOPY_SUFFIX)
    text = read(path)
    return None if text is None else PreCopy.parse(text, path)


def write_precopy(root: Path, rel: str, record: PreCopy) -> None:
    """Write (or replace) the pre-copy record beside the root disk ``rel``."""
    write_atomic(sidecar(root, rel, PRECOPY_SUFFIX), record.text())


def remove_precopy(root: Path, rel: str) -> None:
    """Forget the pre-copy record beside ``rel`` (its overlays are gone)."""
    remove(sidecar(root, rel, PRECOPY_SUFFIX))
