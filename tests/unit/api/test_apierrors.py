"""The one classification of Kubernetes API errors: every class of status, and the reason."""

from __future__ import annotations

import json

import pytest

from vmresize.api.apierrors import ApiErrorKind, classify, status_reason

K = ApiErrorKind


@pytest.mark.parametrize(("status", "reason", "kind"), [
    # no HTTP answer at all: a connection-level failure
    (None, None, K.UNAVAILABLE),
    (0, None, K.UNAVAILABLE),           # the client's marker for TLS errors before a response
    (None, "AlreadyExists", K.UNAVAILABLE),
    # the three 4xx that mean something specific
    (404, None, K.NOT_FOUND),
    (404, "NotFound", K.NOT_FOUND),
    (409, None, K.CONFLICT),
    (409, "Conflict", K.CONFLICT),
    (409, "AlreadyExists", K.ALREADY_EXISTS),
    (409, "alreadyexists", K.CONFLICT),  # Status reasons are exact CamelCase constants
    # the server asks us to come back
    (408, None, K.UNAVAILABLE),
    (429, "TooManyRequests", K.UNAVAILABLE),
    (500, "InternalError", K.UNAVAILABLE),
    (501, None, K.UNAVAILABLE),
    (502, None, K.UNAVAILABLE),
    (503, "ServiceUnavailable", K.UNAVAILABLE),
    (504, "Timeout", K.UNAVAILABLE),
    (599, None, K.UNAVAILABLE),
    # the request itself is wrong: asking again gets the same answer
    (400, "BadRequest", K.REJECTED),
    (401, "Unauthorized", K.REJECTED),
    (403, "Forbidden", K.REJECTED),
    (405, "MethodNotAllowed", K.REJECTED),
    (410, "Gone", K.REJECTED),
    (415, "UnsupportedMediaType", K.REJECTED),
    (422, "Invalid", K.REJECTED),
    (422, "AlreadyExists", K.REJECTED),  # the reason only splits a 409
    # answers no ApiException should carry: not something a retry fixes
    (100, None, K.REJECTED),
    (200, None, K.REJECTED),
    (302, None, K.REJECTED),
    (600, None, K.REJECTED),
])
def test_classify(status: int | None, reason: str | None, kind: ApiErrorKind) -> None:
    assert classify(status, reason) is kind


def test_every_5xx_is_unavailable_and_every_plain_4xx_rejected() -> None:
    special = {404: K.NOT_FOUND, 408: K.UNAVAILABLE, 409: K.CONFLICT, 429: K.UNAVAILABLE}
    for status in range(400, 500):
        assert classify(status) is special.get(status, K.REJECTED), status
    for status in range(500, 600):
        assert classify(status) is K.UNAVAILABLE, status


def test_retryable_kinds() -> None:
    assert {k for k in K if k.retryable} == {K.CONFLICT, K.UNAVAILABLE}


@pytest.mark.parametrize(("body", "reason"), [
    (json.dumps({"kind": "Status", "status": "Failure", "reason": "AlreadyExists",
                 "code": 409}), "AlreadyExists"),
    (json.dumps({"reason": "Conflict"}).encode(), "Conflict"),  # the client may hand bytes
    (json.dumps({"kind": "Status", "code": 409}), None),
    (json.dumps({"reason": 409}), None),
    (json.dumps(["AlreadyExists"]), None),
    ("<html>502 Bad Gateway</html>", None),
    (b"\xff\xfe", None),
    ("", None),
    (None, None),
])
def test_status_reason(body: str | bytes | None, reason: str | None) -> None:
    assert status_reason(body) == reason
