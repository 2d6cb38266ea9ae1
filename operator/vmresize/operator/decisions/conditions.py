"""Conditions (pure): what ``kubectl wait --for=condition=...`` sees for each phase.

VMResize: ``Ready`` (finished: Confirmed, Reverted, RolledBack or Cancelled),
``VerifyResize`` (waiting for the user), ``Failed`` (Failed or RollbackFailed),
``RolledBack``, and ``Healthy`` once a health check has given its verdict (kept through the
phases after it). Instance: ``Ready``.

Both kinds also carry the kstatus conventions that Flux and Argo CD judge custom resources
by (``sigs.k8s.io/cli-utils/pkg/kstatus``): ``Reconciling`` is True while the operator
works towards the end (a VMResize in any phase but VerifyResize and the terminal ones, or a
terminal one whose claims are still settling; an Instance being built), and ``Stalled`` is
True when the request will not be carried out without a person: a VMResize that ended
Failed, RollbackFailed or RolledBack (the VM is back as it was, but the resize asked for
did not happen), an Instance in Error. kstatus then reads in progress, current or failed;
with only ``Ready`` False it reads a failed resize as in progress forever.
``tests/integration/test_kstatus.py`` asks the real library at every phase.
"""

from __future__ import annotations

from datetime import datetime

from vmresize.api.instance import InstancePhase
from vmresize.api.meta import Condition, set_condition
from vmresize.api.resize import TERMINAL_PHASES, ResizePhase

P = ResizePhase
_READY = {P.CONFIRMED, P.REVERTED, P.ROLLED_BACK, P.CANCELLED}
_FAILED = {P.FAILED, P.ROLLBACK_FAILED}
_STALLED = _FAILED | {P.ROLLED_BACK}
_WAITING = TERMINAL_PHASES | {P.VERIFY_RESIZE}
_INSTANCE_WORKING = {InstancePhase.PENDING, InstancePhase.BUILDING, InstancePhase.DELETING}
HEALTH_PASSED = "HealthCheckPassed"
#: Reasons of an automatic revert: the check failed, or gave no verdict in its window.
HEALTH_FAILED = frozenset({"HealthCheckFailed", "HealthCheckTimedOut"})


def _c(kind: str, on: bool, reason: str, message: str, generation: int | None) -> Condition:
    return Condition(type=kind, status="True" if on else "False", reason=reason or "None",
                     message=message, observed_generation=generation)


def resize_conditions(existing: list[Condition], phase: ResizePhase, reason: str,
                      message: str, now: datetime, generation: int | None,
                      settling: bool = False) -> list[Condition]:
    """``existing`` with Ready, VerifyResize, Failed and RolledBack set for ``phase``; the message
    goes only on the conditions that are True. While ``settling`` (the phase is recorded but
    its effects on claims and the Instance are not all done) Ready stays False, so that
    ``kubectl wait --for=condition=Ready`` returns only once the claims are final."""
    out = existing
    for kind, on in (("Ready", phase in _READY and not settling),
                     ("VerifyResize", phase is P.VERIFY_RESIZE),
                     ("Failed", phase in _FAILED), ("RolledBack", phase is P.ROLLED_BACK),
                     ("Reconciling", phase not in _WAITING or settling),
                     ("Stalled", phase in _STALLED)):
        out = set_condition(out, _c(kind, on, reason or phase.value, message if on else "",
                                    generation), now)
    # The check's verdict, set once: the steps after it keep the reason, not its message.
    verdict = reason == HEALTH_PASSED or reason in HEALTH_FAILED
    if verdict and not any(c.type == "Healthy" and c.reason == reason for c in out):
        out = set_condition(out, _c("Healthy", reason == HEALTH_PASSED, reason, message,
                                    generation), now)
    return out


def instance_conditions(existing: list[Condition], phase: InstancePhase, message: str,
                        now: datetime, reason: str = "") -> list[Condition]:
    """``existing`` with Ready (True only while the instance is Active), Reconciling and
    Stalled set; their reason is ``reason`` when given (e.g. why an instance is in Error),
    else the phase; the message goes only on the conditions that are True."""
    out = existing
    for kind, on in (("Ready", phase is InstancePhase.ACTIVE),
                     ("Reconciling", phase in _INSTANCE_WORKING),
                     ("Stalled", phase is InstancePhase.ERROR)):
        out = set_condition(out, _c(kind, on, reason or phase.value, message if on else "",
                                    None), now)
    return out
