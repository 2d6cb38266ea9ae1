"""The bandwidth limit a disk copy runs under (pure).

A resize may ask for its own limit (``VMResize.spec.bandwidthMiBps``); each Host has one for
all its migration traffic (``Host.spec.migrationBandwidthMiBps``). The copy runs under the
lowest. CEL on the VMResize cannot read a Host, so a resize asking more than a host allows
is not refused at admission: it is lowered here, and the note says so (the HostTask carries
it, and the resize's ``status.progress.limitNote`` shows it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limit", "effective"]


@dataclass(frozen=True)
class Limit:
    """The limit of one copy, MiB/s (None: unlimited), and why it is below the asked one."""

    mibps: int | None
    note: str = ""


def effective(asked: int | None, source: tuple[str, int | None],
              dest: tuple[str, int | None]) -> Limit:
    """The lowest of the resize's ``asked`` limit and the (host name, limit) of both ends."""
    hosts = [(lim, name) for name, lim in (source, dest) if lim is not None]
    if not hosts:
        return Limit(asked)
    lowest, name = min(hosts)
    if asked is None:
        return Limit(lowest)
    if asked <= lowest:
        return Limit(asked)
    return Limit(lowest, f"asked {asked} MiB/s, lowered to host {name}'s "
                         f"migrationBandwidthMiBps {lowest} MiB/s")
