"""The operator's errors. Retryability is in the type: kopf retries TemporaryErrors later
and gives up on PermanentErrors. Kubernetes client exceptions are translated in
:mod:`vmresize.operator.persistence.storage` (``raise ... from e``) and never leak past it."""

from __future__ import annotations

import kopf


class Conflict(kopf.TemporaryError):
    """A resourceVersion-guarded write lost a race (HTTP 409); re-read and decide again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=0.2)


class AlreadyExistsError(Exception):
    """A create found the object there already (deterministic names make this benign)."""


class ApiUnavailable(kopf.TemporaryError):
    """The API server did not answer or answered 5xx/429; try again soon."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=2.0)


class ApiRejected(kopf.PermanentError):
    """The API server refused the request as invalid or forbidden; retrying will not help."""


class NotReady(kopf.TemporaryError):
    """Something this step needs is not there yet (for example a Host's migration endpoint)."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message, delay=delay)
