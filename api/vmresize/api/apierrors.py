"""The one classification of Kubernetes API errors, shared by the operator and the agent.

Both processes translate the Kubernetes client's ``ApiException`` at their adapter
(the operator's ``persistence.storage``, the agent's ``kube.client``) into their own
error classes; they call :func:`classify` first, so they never disagree on what an answer
means. This module is pure: it takes the HTTP status and the ``reason`` of the
Kubernetes ``Status`` body, never an exception of the client (``vmresize.api`` must not
import ``kubernetes``).

=================  =======================================================  =========
kind               statuses                                                 retryable
=================  =======================================================  =========
``NOT_FOUND``      404                                                      no
``CONFLICT``       409 (the object changed: re-read and decide again)       yes
``ALREADY_EXISTS`` 409 whose ``Status.reason`` is ``AlreadyExists``         no
``UNAVAILABLE``    no status at all, 408, 429, any 5xx                     yes
``REJECTED``       every other status (other 4xx; anything unexpected)      no
=================  =======================================================  =========

A missing status (``None``, or ``0``, which the client uses for TLS and other errors
raised before any HTTP response arrived) means the request never got an answer: a
connection-level failure, retryable like a 503. A status outside 4xx/5xx (an
``ApiException`` is never raised for a 2xx) is an answer we cannot act on; asking again
would get the same answer, so it is ``REJECTED``.
"""

from __future__ import annotations

import json
from enum import StrEnum

ALREADY_EXISTS_REASON = "AlreadyExists"
"""``metav1.StatusReasonAlreadyExists``: the 409 a create gets when the name is taken."""


class ApiErrorKind(StrEnum):
    """What a failed Kubernetes API call means for the caller."""

    NOT_FOUND = "NotFound"
    CONFLICT = "Conflict"
    ALREADY_EXISTS = "AlreadyExists"
    UNAVAILABLE = "Unavailable"
    REJECTED = "Rejected"

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later without anything else changing
        (a conflict needs a re-read first, but trying again is the remedy)."""
        return self in (ApiErrorKind.CONFLICT, ApiErrorKind.UNAVAILABLE)


def classify(status: int | None, reason: str | None = None) -> ApiErrorKind:
    """Classify an API error by HTTP ``status`` and the ``Status`` body's ``reason``.

    ``status`` ``None`` or ``0`` is a connection-level failure (no HTTP answer):
    :attr:`ApiErrorKind.UNAVAILABLE`, retryable. See the module docstring for the table.
    """
    if not status:
        return ApiErrorKind.UNAVAILABLE
    if status == 404:
        return ApiErrorKind.NOT_FOUND
    if status == 409:
        if reason == ALREADY_EXISTS_REASON:
            return ApiErrorKind.ALREADY_EXISTS
        return ApiErrorKind.CONFLICT
    if status in (408, 429) or 500 <= status <= 599:
        return ApiErrorKind.UNAVAILABLE
    return ApiErrorKind.REJECTED


def status_reason(body: str | bytes | None) -> str | None:
    """The ``reason`` of a Kubernetes ``Status`` response body, if the body is one.

    The client's ``ApiException.reason`` is the HTTP reason phrase ("Conflict" for every
    409); only the body's ``Status.reason`` tells ``AlreadyExists`` from a stale write.
    """
    if not body:
        return None
    try:
        doc = json.loads(body)
    except ValueError:  # a proxy's HTML error page, say
        return None
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return reason if isinstance(reason, str) else None
