"""What ``kubectl vmresize`` exit statuses mean, and which one a resize's phase gives.

A resize that rolled back is never a success (OpenStack's client says it is). The table
is printed by ``--help``, so scripts can rely on it.
"""

from __future__ import annotations

from enum import IntEnum

from vmresize.api.resize import ResizePhase
from vmresize.operator.decisions.conditions import HEALTH_FAILED


class Exit(IntEnum):
    """Exit statuses of the plugin; :data:`MEANING` says what each one means."""

    OK = 0
    ERROR = 1
    USAGE = 2
    FAILED = 3
    NO_VALID_HOST = 4
    REFUSED = 5
    TIMEOUT = 6
    ROLLBACK_FAILED = 7


MEANING: dict[Exit, str] = {
    Exit.OK: "done: VerifyResize reached (start, migrate, watch), Confirmed, Reverted or "
             "Cancelled (confirm, revert, cancel), a host fits (plan), or nothing to wait for",
    Exit.ERROR: "the API server could not be reached, or another unexpected error",
    Exit.USAGE: "bad arguments, or no usable kubeconfig",
    Exit.FAILED: "the resize failed, rolled back, or was reverted because its health check "
                 "did not pass: the instance runs on its old host, unchanged (plan: the "
                 "operator would refuse this resize)",
    Exit.NO_VALID_HOST: "no host fits (the resize failed with NoValidHost, or plan found none)",
    Exit.REFUSED: "the API server refused the request (not found, invalid, forbidden, "
                  "already exists); its message is printed as it is",
    Exit.TIMEOUT: "--timeout passed before the resize reached the phase waited for",
    Exit.ROLLBACK_FAILED: "the rollback itself failed: both copies are kept, an admin must "
                          "look",
}


def help_table() -> str:
    """The exit status table for ``--help``."""
    return "exit status:\n" + "\n".join(f"  {e.value}  {MEANING[e]}" for e in Exit)


def for_phase(phase: ResizePhase, reason: str) -> Exit:
    """The exit status for a resize that stopped in ``phase`` (with ``reason``)."""
    if phase is ResizePhase.ROLLBACK_FAILED:
        return Exit.ROLLBACK_FAILED
    if phase is ResizePhase.FAILED and reason == "NoValidHost":
        return Exit.NO_VALID_HOST
    if phase in (ResizePhase.FAILED, ResizePhase.ROLLED_BACK, ResizePhase.ROLLING_BACK):
        return Exit.FAILED
    if phase is ResizePhase.REVERTED and reason in HEALTH_FAILED:   # not the user's revert
        return Exit.FAILED
    return Exit.OK
