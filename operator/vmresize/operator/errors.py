"""The operator's one error tree: every error the operator raises is an :class:`OperatorError`.

Retryability is in the type: kopf retries ``TemporaryError`` later and gives up on
``PermanentError``, so each leaf also derives from one of them (``retryable`` reads it
back, named as in the agent's tree). Kubernetes client exceptions are classified by
:func:`vmresize.api.apierrors.classify` (the same call the agent makes) and translated in
:mod:`vmresize.operator.persistence.storage` (``raise ... from e``); they never leak past it.

Tree::

    OperatorError                 base
    ├── ApiNotFoundError          404                           kopf.PermanentError
    ├── ApiConflictError          409: a guarded write lost     kopf.TemporaryError (0.2 s)
    ├── ApiAlreadyExistsError     409 AlreadyExists on create   neither: callers decide
    ├── ApiUnavailableError       no answer, 408, 429, 5xx      kopf.TemporaryError (2 s)
    ├── ApiRejectedError          any other 4xx                 kopf.PermanentError
    ├── NotReadyError             a prerequisite is missing     kopf.TemporaryError (5 s)
    └── ForeignTaskError          a task of our name is not ours kopf.PermanentError

The ``Api*`` leaves follow :class:`vmresize.api.apierrors.ApiErrorKind`.
"""

from __future__ import annotations

import kopf


class OperatorError(Exception):
    """Base of every operator error."""

    @property
    def retryable(self) -> bool:
        """Whether kopf will try again (the error is a ``kopf.TemporaryError``)."""
        return isinstance(self, kopf.TemporaryError)


class ApiNotFoundError(OperatorError, kopf.PermanentError):
    """The object is not there (HTTP 404); reads turn this into ``None``."""


class ApiConflictError(OperatorError, kopf.TemporaryError):
    """A resourceVersion-guarded write lost a race (HTTP 409); re-read and decide again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=0.2)


class ApiAlreadyExistsError(OperatorError):
    """A create found the object there already (deterministic names make this benign)."""


class ApiUnavailableError(OperatorError, kopf.TemporaryError):
    """The API server did not answer or answered 408/429/5xx; try again soon."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delay=2.0)


class ApiRejectedError(OperatorError, kopf.PermanentError):
    """The API server refused the request as invalid or forbidden; retrying will not help."""


class NotReadyError(OperatorError, kopf.TemporaryError):
    """Something this step needs is not there yet (for example a Host's migration endpoint)."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message, delay=delay)


class ForeignTaskError(OperatorError, kopf.PermanentError):
    """A HostTask of the deterministic name exists but belongs to another owner (or asks
    for another action or host): never treat it as ours."""
