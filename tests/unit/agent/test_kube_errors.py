"""The agent's Kubernetes adapter maps API errors by the shared classification.

The same statuses as the operator's storage test (tests/unit/operator/test_plumbing.py):
both processes must read an answer, or no answer, the same way.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from vmresize.agent.errors import (
    AgentError,
    KubeAlreadyExistsError,
    KubeConflictError,
    KubeError,
    KubeNotFoundError,
    KubeRejectedError,
    KubeUnavailableError,
)
from vmresize.agent.kube.client import AgentKube
from vmresize.api.apierrors import classify, status_reason


def _api_error(status: int | None, reason: str | None = None) -> ApiException:
    e = ApiException(status=status, reason="x")
    e.body = json.dumps({"kind": "Status", "reason": reason}) if reason else ""
    return e


@pytest.fixture(scope="module")
def kube() -> AgentKube:
    return AgentKube(client.ApiClient())  # no request is ever sent


@pytest.mark.parametrize(("status", "reason", "error", "retryable"), [
    (None, None, KubeUnavailableError, True),      # no HTTP answer: connection-level
    (0, None, KubeUnavailableError, True),
    (404, "NotFound", KubeNotFoundError, False),
    (409, "Conflict", KubeConflictError, True),
    (409, "AlreadyExists", KubeAlreadyExistsError, False),
    (408, None, KubeUnavailableError, True),
    (429, None, KubeUnavailableError, True),
    (503, None, KubeUnavailableError, True),
    (422, "Invalid", KubeRejectedError, False),
    (403, "Forbidden", KubeRejectedError, False),
])
def test_api_errors_are_typed(kube: AgentKube, status: int | None, reason: str | None,
                              error: type[KubeError], retryable: bool) -> None:
    exc = _api_error(status, reason)

    def fn() -> None:
        raise exc

    with pytest.raises(error) as info:
        kube._call("op", fn)
    assert type(info.value) is error
    assert isinstance(info.value, AgentError)
    assert info.value.__cause__ is exc
    assert info.value.retryable is retryable
    assert info.value.retryable is classify(exc.status, status_reason(exc.body)).retryable
    assert info.value.status == (status or None)


def test_transport_errors_are_unavailable(kube: AgentKube) -> None:
    def fn() -> None:
        raise ProtocolError("reset")

    with pytest.raises(KubeUnavailableError) as info:
        kube._call("op", fn)
    assert info.value.retryable
    assert info.value.status is None
