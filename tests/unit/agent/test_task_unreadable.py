"""What an agent says of a HostTask it cannot read (issue 18, finding 7): the fields, and
both versions when a newer operator wrote it; never retried."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vmresize.agent.kube.client import unreadable
from vmresize.api import naming
from vmresize.api.hosttask import HostTask


def _body(writer: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "t1", "namespace": "sys"}
    if writer is not None:
        meta["annotations"] = {naming.WRITER_ANNOTATION: writer}
    return {"apiVersion": "vmresize.io/v1alpha1", "kind": "HostTask", "metadata": meta,
            "spec": {"host": "hv1", "action": "Finish", "owner": "ns/r", "newField": 1},
            "status": {"phase": "Pending"}}


def _error(body: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as e:
        HostTask.from_body(body)
    return e.value


@pytest.mark.parametrize(("writer", "skew"), [("0.9.0", True), ("0.5.0", False),
                                              (None, False)])
def test_the_refusal_names_the_field_and_a_skew_both_versions(writer: str | None,
                                                              skew: bool) -> None:
    body = _body(writer)
    e = unreadable(body, _error(body), "0.5.0")
    assert e.retryable is False
    assert e.phase == "Pending"
    msg = str(e)
    assert "t1" in msg
    assert "spec.newField" in msg, msg
    assert ("version skew" in msg) is skew, msg
    if skew:
        assert "0.5.0" in msg
        assert "0.9.0" in msg
