"""The engine's remembered copy of a resize it wrote is used only for that very object.

Found by the model test (issue 18, finding 8): a step wrote its decision with effects to
carry out (Scheduling, lock the instance), the lock's write met a 409, and before the
retry an admin removed the finalizer and a new VMResize of the same name was applied. The
new resize's first step took the remembered copy of the old one and carried out its
effects: the instance was locked by the gone resize's UID (the new one then failed as
InstanceBusy until the lock sweep).
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.engine_world import NS, T0, build_world
from tests.support.memstore import MemStorage

from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec
from vmresize.operator.errors import ApiConflictError
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

S = Settings(namespace="sys")


def test_a_new_resize_of_the_same_name_never_carries_out_the_old_ones_effects() -> None:
    s = build_world(MemStorage(), new_flavor="medium")
    old = s.resize(NS, "r")
    assert old is not None

    def conflict_on_the_lock(what: str, key: Any) -> None:
        if key[0] == "instances":
            raise ApiConflictError("injected 409")

    s.before_write = conflict_on_the_lock
    with pytest.raises(ApiConflictError):
        engine.reconcile(s, S, NS, "r", T0)
    s.before_write = lambda what, key: None
    s.remove("vmresizes", NS, "r")   # the finalizer forced off: no step of it follows
    s.put(VMResize(metadata={"name": "r", "namespace": NS},
                   spec=VMResizeSpec(instance_name="vm", flavor="medium")))
    new = s._get(VMResize, "r", NS)   # a read of the test's own: the engine's memory stays
    assert new is not None

    for _ in range(2):   # as the driver does: a 409 is stepped again at once
        try:
            engine.reconcile(s, S, NS, "r", T0)
            break
        except ApiConflictError:
            continue

    inst = s.instance(NS, "vm")
    assert inst is not None
    assert inst.status is not None
    assert inst.status.active_resize_uid != old.uid
    assert inst.status.active_resize_uid == new.uid
    r = s.resize(NS, "r")
    assert r is not None
    assert r.status is not None
    assert r.status.phase is not ResizePhase.FAILED
