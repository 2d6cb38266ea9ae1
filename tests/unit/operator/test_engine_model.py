"""A model-based test of the VMResize engine: random interleavings against the invariants.

Hypothesis drives one resize of one instance through the real engine over an in-memory
storage (:mod:`tests.support.memstore`), with: the user's confirm, revert and delete; the
operator "crashing" between any two writes of a step, a 409 on any write, and the user's
patch landing between a step's read and its write; duplicate deliveries (the same step run
twice); and a simulated agent that runs the tasks it finds, succeeding or failing, and
honours the fencing contract (a destructive step runs only if the owner's
``status.currentTask`` names it). After every rule it checks: at most one copy of the VM
runs; never Confirm together with CleanupDest/RestoreSource for one resize; the source copy
survives until Confirmed; claims on every Host equal what the resize and the instance hold.

``make test`` runs the default profile (200 examples of up to 50 steps); set
``VMRESIZE_MODEL_EXAMPLES=2000`` (or more) for a longer search.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import kopf
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tests.support.engine_world import NS, T0, ready_host
from tests.support.memstore import MemStorage

from vmresize.api.flavor import Flavor, FlavorSpec
from vmresize.api.host import Allocation
from vmresize.api.hosttask import HostTask, TaskAction, TaskPhase
from vmresize.api.instance import Instance, InstancePhase, InstanceSpec, InstanceStatus
from vmresize.api.meta import Resources
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec
from vmresize.operator.errors import ForeignTask
from vmresize.operator.reconcile import engine
from vmresize.operator.settings import Settings

A, P = TaskAction, ResizePhase
SYS = "sys"
SETTINGS = Settings(namespace=SYS, auto_confirm_seconds=0, max_attempts=2, task_retries=2)
DESTRUCTIVE = {A.MIGRATE_DISK, A.CONFIRM, A.CLEANUP_DEST}
HOLDS_DEST = {P.PREPARING, P.MIGRATING, P.FINISHING, P.VERIFY_RESIZE, P.CONFIRMING,
              P.REVERTING}
MAY_HOLD_DEST = {P.SCHEDULING, P.ROLLING_BACK, P.ROLLBACK_FAILED}
EXAMPLES = int(os.environ.get("VMRESIZE_MODEL_EXAMPLES", "200"))


class CrashError(Exception):
    """The operator process dies here: the rest of the step never happens."""


class ResizeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = MemStorage()
        self.now = T0
        for h in ("h1", "h2", "h3"):
            self.s.put(ready_host(h))
        self.s.put(Flavor(metadata={"name": "small"},
                          spec=FlavorSpec(vcpus=1, memory_mib=1024, disk_gib=10)))
        self.s.put(Flavor(metadata={"name": "medium"},
                          spec=FlavorSpec(vcpus=2, memory_mib=2048, disk_gib=20)))
        self.s.put(Instance(metadata={"name": "vm", "namespace": NS},
                            spec=InstanceSpec(flavor="small"), status=InstanceStatus(
                                phase=InstancePhase.ACTIVE, host="h1", flavor="small", vcpus=1,
                                memory_mib=1024, disk_gib=10, domain_name="tenant.vm",
                                disk_path="instances/tenant/vm/x/disk.qcow2")))
        self.iuid = self.s.instance(NS, "vm").uid  # type: ignore[union-attr]
        self.s.patch("hosts", "", "h1", lambda b: b["status"].setdefault("allocations", {})
                     .update({f"Instance/{self.iuid}": Allocation(
                         consumer=f"{NS}/vm", kind="Instance", resources=Resources(
                             vcpus=1, memory_mib=1024, disk_gib=10)).wire()}))
        self.s.put(VMResize(metadata={"name": "r", "namespace": NS},
                            spec=VMResizeSpec(instance_name="vm", flavor="medium",
                                              auto_confirm_seconds=30)))
        self.ruid = self.s.resize(NS, "r").uid  # type: ignore[union-attr]
        # The VM's copies: host -> running. The source starts on h1, running.
        self.copies: dict[str, bool] = {"h1": True}
        self.confirmed = False
        self.gone = False

    # -- the operator

    def _step(self, fault: str | None = None, at: int = 0, user: str = "") -> None:
        if self.gone:
            return
        count = [0]

        def hook(what: str, key: Any) -> None:
            count[0] += 1
            if count[0] != at:
                return
            if fault == "crash":
                raise CrashError
            if fault == "409":
                raise kopf.TemporaryError("injected 409")
            if fault == "user":
                self._user(user)

        self.s.before_write = hook
        try:
            out = engine.reconcile(self.s, SETTINGS, NS, "r", self.now)
        except (CrashError, kopf.TemporaryError):
            return
        except ForeignTask as e:   # pragma: no cover - the point of the check
            raise AssertionError(f"a task of ours was someone else's: {e}") from e
        finally:
            self.s.before_write = lambda what, key: None
        r = self.s.resize(NS, "r")
        if out.done and r is not None and r.metadata.get("deletionTimestamp"):
            self.s.delete_tasks(SYS, self.ruid)   # the delete handler, then the finalizer
            self.s.remove("vmresizes", NS, "r")
            self.gone = True

    @rule()
    def operator_step(self) -> None:
        self._step()

    @rule()
    def duplicate_delivery(self) -> None:
        self._step()
        self._step()

    @rule(at=st.integers(1, 6))
    def crash_at_write(self, at: int) -> None:
        self._step("crash", at)

    @rule(at=st.integers(1, 6))
    def conflict_at_write(self, at: int) -> None:
        self._step("409", at)

    @rule(at=st.integers(1, 4), user=st.sampled_from(["confirm", "revert", "delete"]))
    def user_races_a_step(self, at: int, user: str) -> None:
        self._step("user", at, user)

    # -- the user

    def _user(self, what: str) -> None:
        r = self.s.resize(NS, "r")
        if r is None:
            return
        if what == "delete":
            self.s.mark_deleted("vmresizes", NS, "r")
        elif not (r.spec.confirm or r.spec.revert):   # CEL: exclusive and one-way
            self.s.patch("vmresizes", NS, "r", lambda b: b["spec"].update({what: True}))

    @rule(what=st.sampled_from(["confirm", "revert", "delete"]))
    def user(self, what: str) -> None:
        self._user(what)

    @rule(seconds=st.sampled_from([5, 40]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # -- the agents

    def _fenced(self, t: HostTask) -> bool:
        owner = self.s.resize(NS, "r")
        return (owner is None or owner.uid != t.spec.owner_uid or owner.status is None
                or owner.status.current_task != t.name)

    @rule(pick=st.integers(0, 7), ok=st.booleans(), retryable=st.booleans())
    def agent_runs_a_task(self, pick: int, ok: bool, retryable: bool) -> None:
        todo = sorted((t for t in self.s.tasks()
                       if t.status is None or t.status.phase is TaskPhase.PENDING),
                      key=lambda t: t.name)
        if not todo:
            return
        t = todo[pick % len(todo)]
        a, host = t.spec.action, t.spec.host
        status: dict[str, Any] = {"phase": "Succeeded", "result": {}}
        if a in DESTRUCTIVE and self._fenced(t):
            status = {"phase": "Failed", "message": "not the owner's current task",
                      "retryable": False}
        elif not ok:
            status = {"phase": "Failed", "message": "injected", "retryable": retryable}
        elif a is A.MIGRATE_DISK:
            assert t.spec.peer is not None
            self.copies[host] = False                        # power off, then copy
            self.copies[t.spec.peer.name] = False
            status["result"] = {"checksum": "ab" * 32, "downtimeSeconds": 1.0}
        elif a is A.FINISH:
            if host not in self.copies:
                status = {"phase": "Failed", "message": "no disk", "retryable": False}
            else:
                self.copies[host] = True
        elif a in (A.CONFIRM, A.CLEANUP_DEST):
            self.copies.pop(host, None)
        elif a is A.RESTORE_SOURCE:
            if host not in self.copies:
                status = {"phase": "Failed", "message": "no source", "retryable": False}
            else:
                self.copies[host] = True
        self.s.patch("hosttasks", SYS, t.name, lambda b: b.update(status=status))

    # -- invariants

    @invariant()
    def at_most_one_copy_runs(self) -> None:
        assert sum(self.copies.values()) <= 1, self.copies

    @invariant()
    def source_survives_until_confirmed(self) -> None:
        r = self.s.resize(NS, "r")
        phase = r.status.phase if r and r.status else None
        self.confirmed |= phase is P.CONFIRMED
        # A resize deleted once its Confirm ran is gone without a last look at Confirmed; the
        # Confirm task existing proves the decision was recorded (Confirming) before it ran.
        self.confirmed |= r is None and any(t.spec.action is A.CONFIRM
                                            for t in self.s.created_tasks)
        if "h1" not in self.copies:
            assert phase in (P.CONFIRMING, P.CONFIRMED) or self.confirmed, phase
            assert self.copies, "both copies are gone"

    @invariant()
    def no_contradicting_tasks(self) -> None:
        acts = {t.spec.action for t in self.s.created_tasks}
        assert not (A.CONFIRM in acts and acts & {A.CLEANUP_DEST, A.RESTORE_SOURCE}), acts

    @invariant()
    def claims_match_holders(self) -> None:
        r = self.s.resize(NS, "r")
        if r is not None and r.status is not None and r.status.pending:
            return   # recorded, not yet carried out: the next step does it
        inst = self.s.instance(NS, "vm")
        assert inst is not None
        assert inst.status is not None
        rkey, ikey = f"VMResize/{self.ruid}", f"Instance/{self.iuid}"
        held = {k: h.name for h in self.s.hosts() for k in (h.status.allocations if h.status
                                                            else {})}
        assert held.get(ikey) == inst.status.host, (held, inst.status.host)
        phase = r.status.phase if r is not None and r.status else None
        dest = r.status.dest_host if r is not None and r.status else None
        if phase in HOLDS_DEST:
            assert held.get(rkey) == dest, (phase, held)
        elif phase in MAY_HOLD_DEST:
            assert held.get(rkey) in (None, dest), (phase, held)
        else:
            assert rkey not in held, (phase, held)
        locked = inst.status.active_resize_uid == self.ruid
        if phase is None or phase in (P.FAILED, P.REVERTED, P.ROLLED_BACK, P.CONFIRMED):
            assert not locked, phase


ResizeModel.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestResizeModel = ResizeModel.TestCase
