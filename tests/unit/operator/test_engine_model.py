"""A model-based test of the VMResize engine: random interleavings against the invariants.

Hypothesis drives resizes of one instance through the real engine over an in-memory
storage (:mod:`tests.support.memstore`), with: the user's confirm, revert and delete; the
operator "crashing" between any two writes of a step, a 409 (:class:`ApiConflictError`) on any
write, and the user's patch landing between a step's read and its write; duplicate
deliveries (the same step run twice); the operator's delete handler (HostTasks deleted, then
the finalizer); an admin removing the finalizer by force and deleting a HostTask, running or
not; the claim and lock sweeps; a second resize (another name, or the same name again with a
new UID) while or after the first runs; and time passing, with Hosts beating or not.

The agents are modelled on the real one (``vmresize.agent.kube.handlers``, ``executor``,
``sourcehold``): a task is picked up only after its owner's earlier step on that host has
ended (the owner lock), and only if the owner's ``status.currentTask`` names it (else it ends
Failed, "superseded"); it is then Running and goes through steps that take time, each its own
rule, with the fence exactly where the executor asks it:

* MigrateDisk: fence, power off and hold the source, send the disk, report (a resumed attempt
  whose source is held already skips the fence and the power-off, as the executor does);
* Finish: verify and define, fence, start, report;
* Confirm and CleanupDest: fence, delete, report (Confirm refuses a source that runs);
* RestoreSource (no fence): start the held source, report; Prepare: report;
* HealthCheck (the timer's look before an auto-confirm): fence, look (fails unless the
  copy on its host runs), report.

A running step beats (``status.heartbeat``) and is cancelled at a beat once its owner names
another task (Failed, "superseded while running"); any step may fail (retryable or not); an
agent may restart (its attempts vanish, their tasks stay Running and are resumed with the next
attempt). Its status writes are merge patches without a resourceVersion, so they land on
whatever HostTask has that name by then (one recreated after an admin deleted it).

After every rule it checks: at most one copy of the VM runs, and one always exists; never
Confirm together with CleanupDest/RestoreSource for one resize; a resize's source copy
survives until it is Confirming; claims on every Host equal what the resizes and the
instance hold (a resize whose finalizer was forced off: until the next claim/lock sweep);
and, once the operator has seen every outcome and no step is in flight, the status never
says Running for a VM that is off, also after a finalizer was forced off and the sweeps ran
(the lock sweep's verdict, :mod:`vmresize.operator.decisions.gone_holder`).

``make test`` runs the default profile (200 examples of up to 50 steps); set
``VMRESIZE_MODEL_EXAMPLES=2000`` (or more) for a longer search, and
``VMRESIZE_MODEL_STEPS`` for longer runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
from vmresize.api.instance import Instance, InstancePhase, InstanceSpec, InstanceStatus, PowerState
from vmresize.api.meta import Resources
from vmresize.api.resize import ResizePhase, VMResize, VMResizeSpec
from vmresize.operator.errors import ApiConflictError, ForeignTaskError
from vmresize.operator.reconcile import engine, sweep
from vmresize.operator.settings import Settings

A, P = TaskAction, ResizePhase
SYS = "sys"
SETTINGS = Settings(namespace=SYS, auto_confirm_seconds=0, max_attempts=2, task_retries=2)
HOLDS_DEST = {P.PREPARING, P.MIGRATING, P.FINISHING, P.VERIFY_RESIZE, P.CONFIRMING,
              P.REVERTING}
MAY_HOLD_DEST = {P.SCHEDULING, P.ROLLING_BACK, P.ROLLBACK_FAILED}
ENDED = {P.FAILED, P.REVERTED, P.ROLLED_BACK, P.CONFIRMED}
NAMES = ("r", "r2")
WHICH = st.sampled_from(["r", "r", "r", "r2"])
EXAMPLES = int(os.environ.get("VMRESIZE_MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("VMRESIZE_MODEL_STEPS", "50"))
#: The steps of each action as the real executor takes them; "fence" is its owner check.
STAGES: dict[TaskAction, tuple[str, ...]] = {
    A.PREPARE: ("report",),
    A.MIGRATE_DISK: ("fence", "power_off", "send", "report"),
    A.FINISH: ("define", "fence", "start", "report"),
    A.CONFIRM: ("fence", "delete", "report"),
    A.CLEANUP_DEST: ("fence", "delete", "report"),
    A.RESTORE_SOURCE: ("start", "report"),
    A.HEALTH_CHECK: ("fence", "look", "report"),   # the timer's look before auto-confirm
}


class CrashError(Exception):
    """The operator process dies here: the rest of the step never happens."""


@dataclass
class Run:
    """One attempt of one HostTask by the agent of its host."""

    name: str
    host: str
    action: TaskAction
    owner: str           # the owner's UID
    stage: int = 0
    result: dict[str, Any] = field(default_factory=dict)


class ResizeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = MemStorage()
        self.now = T0
        self.s.api_clock = lambda: self.now
        for h in ("h1", "h2", "h3"):
            self.s.put(ready_host(h))
        for name, (vcpus, mib, gib) in {"small": (1, 1024, 10), "medium": (2, 2048, 20),
                                        "large": (4, 4096, 40)}.items():
            self.s.put(Flavor(metadata={"name": name},
                              spec=FlavorSpec(vcpus=vcpus, memory_mib=mib, disk_gib=gib)))
        self.s.put(Instance(metadata={"name": "vm", "namespace": NS},
                            spec=InstanceSpec(flavor="small"), status=InstanceStatus(
                                phase=InstancePhase.ACTIVE, host="h1", flavor="small", vcpus=1,
                                memory_mib=1024, disk_gib=10, domain_name="tenant.vm",
                                power_state=PowerState.RUNNING,
                                disk_path="instances/tenant/vm/x/disk.qcow2")))
        self.iuid = self.s.instance(NS, "vm").uid  # type: ignore[union-attr]
        self.s.patch("hosts", "", "h1", lambda b: b["status"].setdefault("allocations", {})
                     .update({f"Instance/{self.iuid}": Allocation(
                         consumer=f"{NS}/vm", kind="Instance", resources=Resources(
                             vcpus=1, memory_mib=1024, disk_gib=10)).wire()}))
        self.applied = 0
        self._apply("r", "medium")
        # The VM's copies: host -> running. The source starts on h1, running.
        self.copies: dict[str, bool] = {"h1": True}
        self.held: set[str] = set()     # sources powered off and held by MigrateDisk
        self.runs: dict[str, Run] = {}  # agents' attempts in progress, by task name
        self.forced: set[str] = set()   # UIDs of resizes whose finalizer was forced off
        self.unswept: dict[str, set[str]] = {}   # ... and the sweeps yet to look at them
        self.confirming: set[str] = set()   # UIDs that recorded Confirming (or Confirmed)
        self.redo: set[str] = set()     # tasks an admin deleted after they were picked up
        self.bad: list[str] = []        # what an agent did that it never may
        self.seq = 0
        self.outcome_seq: dict[str, int] = {}   # owner UID -> when an agent last reported
        self.seen_seq: dict[str, int] = {}      # owner UID -> when the operator last looked

    def _apply(self, name: str, flavor: str) -> None:
        self.applied += 1
        self.s.put(VMResize(metadata={"name": name, "namespace": NS},
                            spec=VMResizeSpec(instance_name="vm", flavor=flavor,
                                              auto_confirm_seconds=30)))

    def _resize(self, name: str) -> VMResize | None:
        return self.s._get(VMResize, name, NS)

    def _tick(self) -> int:
        self.seq += 1
        return self.seq

    # -- the operator

    def _step(self, name: str, fault: str | None = None, at: int = 0, user: str = "") -> None:
        r0 = self._resize(name)
        if r0 is None:
            return
        uid = r0.uid
        count = [0]
        seq = self._tick()

        def hook(what: str, key: Any) -> None:
            count[0] += 1
            if count[0] != at:
                return
            if fault == "crash":
                raise CrashError
            if fault == "409":
                raise ApiConflictError("injected 409")
            if fault == "user":
                self._user(name, user)

        self.s.before_write = hook
        try:
            out = engine.reconcile(self.s, SETTINGS, NS, name, self.now)
        except (CrashError, kopf.TemporaryError):
            return
        except ForeignTaskError as e:   # pragma: no cover - the point of the check
            raise AssertionError(f"a task of ours was someone else's: {e}") from e
        finally:
            self.s.before_write = lambda what, key: None
        r = self._resize(name)
        if r is not None and r.uid == uid:
            self.seen_seq[uid] = seq
            if r.status is not None and r.status.phase in (P.CONFIRMING, P.CONFIRMED):
                self.confirming.add(uid)
        if out.done and r is not None and r.uid == uid and r.metadata.get("deletionTimestamp"):
            self.s.delete_tasks(SYS, uid)   # the delete handler, then the finalizer
            self.s.remove("vmresizes", NS, name)

    @rule(name=WHICH)
    def operator_step(self, name: str) -> None:
        self._step(name)

    @rule()
    def operator_steps_each(self) -> None:
        for name in NAMES:
            self._step(name)

    @rule(name=WHICH, fault=st.sampled_from(["crash", "409", "user", "again"]),
          at=st.integers(1, 6), user=st.sampled_from(["confirm", "revert", "delete"]))
    def operator_step_meets(self, name: str, fault: str, at: int, user: str) -> None:
        """A crash or a 409 at the ``at``-th write, the user's patch landing before it, or
        the same step delivered twice."""
        if fault == "again":
            self._step(name)
            self._step(name)
        else:
            self._step(name, fault, at, user)

    @rule(what=st.sampled_from(["claims", "lock"]))
    def sweep(self, what: str) -> None:
        """The operator's nets under leaked claims and locks (host_health, handlers.sweep)."""
        if what == "claims":
            sweep.sweep_claims(self.s)
            self._swept(what)
            return
        before = self._lock()
        sweep.sweep_instance_lock(self.s, NS, "vm", SYS)
        self._swept(what)
        if before is not None and self._lock() != before:
            # The claim sweep keeps a gone resize's claims while the lock names it: now that
            # the lock is released, the next claim sweep owes their release.
            self.unswept.setdefault(before, set()).add("claims")

    def _lock(self) -> str | None:
        inst = self.s.instance(NS, "vm")
        return inst.status.active_resize_uid if inst and inst.status else None

    def _swept(self, what: str) -> None:
        for uid in list(self.unswept):
            self.unswept[uid].discard(what)
            if not self.unswept[uid]:
                del self.unswept[uid]

    # -- the user and the admin

    def _user(self, name: str, what: str) -> None:
        r = self._resize(name)
        if r is None:
            return
        if what == "delete":
            self.s.mark_deleted("vmresizes", NS, name)
        elif not (r.spec.confirm or r.spec.revert):   # CEL: exclusive and one-way
            self.s.patch("vmresizes", NS, name, lambda b: b["spec"].update({what: True}))

    @rule(name=WHICH, what=st.sampled_from(["confirm", "revert", "delete", "apply"]),
          flavor=st.sampled_from(["small", "medium", "large"]))
    def user(self, name: str, what: str, flavor: str) -> None:
        """Confirm, revert, delete; or apply another resize: by another name while the
        first may still run, or by the same name once the first is gone (a new UID)."""
        if what != "apply":
            self._user(name, what)
        elif self._resize(name) is None and self.applied < 3:
            self._apply(name, flavor)

    @rule(name=WHICH, what=st.sampled_from(["finalizer", "task"]), pick=st.integers(0, 7))
    def admin(self, name: str, what: str, pick: int) -> None:
        """Forced: the resize goes without its delete handler (tasks, claims and lock
        stay for the sweeps); or a HostTask is deleted, running or not (its agent's attempt
        goes on)."""
        r = self._resize(name)
        if what == "finalizer" and r is not None:
            self.forced.add(r.uid)
            self.unswept[r.uid] = {"claims", "lock"}
            self.s.remove("vmresizes", NS, name)
        tasks = sorted(self.s.tasks(), key=lambda t: t.name)
        if what == "task" and tasks:
            t = tasks[pick % len(tasks)]
            self.s.remove(HostTask.plural, SYS, t.name)
            self.outcome_seq[t.spec.owner_uid or ""] = self._tick()   # news to the operator
            if t.status is not None and t.status.phase is not TaskPhase.PENDING:
                self.redo.add(t.name)   # what it did is unknown until it is done again

    @rule(seconds=st.sampled_from([5, 5, 40]), beat=st.booleans())
    def time_passes(self, seconds: int, beat: bool) -> None:
        """Time passes; the agents' Host heartbeats follow it, or not (frozen agents)."""
        self.now += timedelta(seconds=seconds)
        for host in ("h1", "h2", "h3") if beat else ():
            self.s.patch("hosts", "", host, lambda b: b["status"].update(
                heartbeat=self.now.isoformat()))

    # -- the agents

    def _superseded(self, t: HostTask) -> bool:
        """The fence (vmresize.agent.kube.fence): does the owner still name this task?"""
        owner = self._resize(t.spec.owner.partition("/")[2])
        return (owner is None or owner.uid != t.spec.owner_uid or owner.status is None
                or owner.status.current_task != t.name)

    def _report(self, run: Run, status: dict[str, Any]) -> None:
        """A merge patch of the task's status: no resourceVersion, so it lands on whatever
        task has that name now (a 404 if none, which the agent only logs)."""
        key = (HostTask.plural, SYS, run.name)
        if key not in self.s.objects:
            return

        def merge(b: dict[str, Any]) -> None:
            cur = b.setdefault("status", {})
            for k, v in status.items():
                if v is None:
                    cur.pop(k, None)
                else:
                    cur[k] = v

        self.s.patch(HostTask.plural, SYS, run.name, merge)
        if status.get("phase") in ("Succeeded", "Failed"):
            self.outcome_seq[run.owner] = self._tick()
            self.redo.discard(run.name)

    def _end(self, run: Run, message: str, retryable: bool) -> None:
        self.runs.pop(run.name, None)
        self._report(run, {"phase": "Failed", "message": message, "retryable": retryable,
                           "finishedAt": self.now.isoformat()})

    def _pick_up(self, pick: int) -> Run | None:
        """kopf hands over a task that is Pending, or Running from an attempt that died;
        it runs after any step of the same owner on that host has ended."""
        busy = {(r.host, r.owner) for r in self.runs.values()}
        due = sorted((t for t in self.s.tasks() if t.name not in self.runs
                      and (t.status is None or t.status.phase in (TaskPhase.PENDING,
                                                                  TaskPhase.RUNNING))
                      and (t.spec.host, t.spec.owner_uid) not in busy),
                     key=lambda t: t.name)
        if not due:
            return None
        t = due[pick % len(due)]
        run = Run(t.name, t.spec.host, t.spec.action, t.spec.owner_uid or "",
                  result={"peer": t.spec.peer.name if t.spec.peer else None})
        if self._superseded(t):
            self._end(run, "superseded: the owner names another task", False)
            return None
        attempt = (t.status.attempt if t.status else 0) + 1
        self.runs[t.name] = run
        self._report(run, {"phase": "Running", "attempt": attempt,
                           "startedAt": self.now.isoformat(),
                           "heartbeat": self.now.isoformat(), "finishedAt": None})
        return run

    def _act(self, run: Run, stage: str) -> str | None:
        """One step of the executor; a reason if it ends the attempt Failed (not retryable)."""
        host, a = run.host, run.action
        if stage == "fence":
            if a is A.MIGRATE_DISK and host in self.held:
                return None   # resumed: no domain is defined, nothing to fence
            t = self.s.task(SYS, run.name)
            if t is None or self._superseded(t):
                return "fenced: the owner no longer asks for this step"
        elif stage == "power_off":
            if host not in self.held:
                if host not in self.copies:
                    return "domain not found"
                self.copies[host] = False
                self.held.add(host)
        elif stage == "send":
            peer = run.result["peer"]
            if host not in self.copies:
                return "no source disk"
            self.copies.setdefault(peer, False)
        elif stage == "look":
            if not self.copies.get(host):
                return f"domain is {'Shutoff' if host in self.copies else 'gone'}, not Running"
        elif stage == "define":
            if host not in self.copies:
                return "no disk to verify"
        elif stage == "start":
            if host not in self.copies:
                return "no disk"
            if a is A.RESTORE_SOURCE:
                self.held.discard(host)
            self.copies[host] = True
        elif stage == "delete":
            if a is A.CONFIRM and self.copies.get(host):
                return "refusing to confirm: the source runs"
            if host in self.copies:
                if a is A.CONFIRM and run.owner not in self.confirming:
                    self.bad.append(f"Confirm {run.name} deleted {host} unrecorded")
                if not set(self.copies) - {host}:
                    self.bad.append(f"{run.name} deleted the last copy, on {host}")
            self.copies.pop(host, None)
            self.held.discard(host)
        return None

    def _advance(self, run: Run, fail: bool, retryable: bool) -> bool:
        """One step of ``run``; False once the attempt has ended."""
        stage = STAGES[run.action][run.stage]
        if fail and stage != "report":
            self._end(run, "injected", retryable)
            return False
        why = self._act(run, stage)
        if why is not None:
            self._end(run, why, False)
            return False
        if stage == "report":
            self.runs.pop(run.name, None)
            result: dict[str, Any] = {}
            if run.action is A.MIGRATE_DISK:
                result = {"checksum": "ab" * 32, "downtimeSeconds": 1.0,
                          "poweredOffAt": self.now.isoformat()}
            elif run.action is A.FINISH:
                result = {"checksum": "ab" * 32, "startedAt": self.now.isoformat()}
            self._report(run, {"phase": "Succeeded", "result": result, "message": "done",
                               "finishedAt": self.now.isoformat()})
            return False
        run.stage += 1
        return True

    @rule(pick=st.integers(0, 7), steps=st.integers(1, 4), fail_at=st.integers(0, 24),
          retryable=st.booleans())
    def agent_works(self, pick: int, steps: int, fail_at: int, retryable: bool) -> None:
        """An agent picks a task up (if none of its runs is picked) and takes ``steps`` steps
        of it, failing at the ``fail_at``-th if that comes."""
        runs = sorted(self.runs)
        run = self.runs[runs[pick % len(runs)]] if runs and pick % 2 else self._pick_up(pick)
        for i in range(steps):
            if run is None or not self._advance(run, i == fail_at, retryable):
                return

    @rule(pick=st.integers(0, 7))
    def agent_ends_a_step(self, pick: int) -> None:
        """An agent picks a task up (or goes on with one) and runs it to its end."""
        runs = sorted(self.runs)
        run = self.runs[runs[pick % len(runs)]] if runs and pick % 2 else self._pick_up(pick)
        while run is not None and self._advance(run, False, False):
            pass

    @rule(pick=st.integers(0, 7))
    def agent_beats(self, pick: int) -> None:
        """The watch of a running step: beat, then cancel it if the owner names another."""
        if not self.runs:
            return
        run = self.runs[sorted(self.runs)[pick % len(self.runs)]]
        self._report(run, {"heartbeat": self.now.isoformat()})
        t = self.s.task(SYS, run.name)
        if t is not None and self._superseded(t):
            self._end(run, "superseded while running", False)

    @rule(host=st.sampled_from(["h1", "h2", "h3"]))
    def agent_restarts(self, host: str) -> None:
        """Killed and started again: its attempts are gone, their tasks stay Running."""
        for name in [n for n, r in self.runs.items() if r.host == host]:
            del self.runs[name]

    # -- invariants

    @invariant()
    def agents_did_nothing_forbidden(self) -> None:
        assert not self.bad, self.bad

    @invariant()
    def at_most_one_copy_runs(self) -> None:
        assert sum(self.copies.values()) <= 1, self.copies
        assert self.copies, "every copy is gone"

    @invariant()
    def source_survives_until_confirming(self) -> None:
        inst = self.s.instance(NS, "vm")
        assert inst is not None
        assert inst.status is not None
        for name in NAMES:
            r = self._resize(name)
            if r is None or r.status is None or r.status.source_host is None:
                continue
            if r.uid != inst.status.active_resize_uid or r.uid in self.confirming:
                continue
            assert r.status.source_host in self.copies, (name, r.status.phase, self.copies)

    @invariant()
    def no_contradicting_tasks(self) -> None:
        acts: dict[str, set[TaskAction]] = {}
        for t in self.s.created_tasks:
            acts.setdefault(t.spec.owner_uid or "", set()).add(t.spec.action)
        for owner, a in acts.items():
            assert not (A.CONFIRM in a and a & {A.CLEANUP_DEST, A.RESTORE_SOURCE}), (owner, a)

    @invariant()
    def claims_match_holders(self) -> None:
        inst = self.s.instance(NS, "vm")
        assert inst is not None
        assert inst.status is not None
        held = {k: h.name for h in self.s.hosts() for k in (h.status.allocations if h.status
                                                            else {})}
        ikey = f"Instance/{self.iuid}"
        live = {r.uid: r for r in (self._resize(n) for n in NAMES) if r is not None}
        if any(r.status is not None and r.status.pending for r in live.values()):
            return   # recorded, not yet carried out: the next step does it
        assert held.get(ikey) == inst.status.host, (held, inst.status.host)
        lock = inst.status.active_resize_uid
        for key in held:
            kind, _, uid = key.partition("/")
            if kind == "VMResize" and uid not in live:
                # kept on purpose while the Instance's lock still names it (the lock sweep
                # found the gone resize unfinished and set the Instance to Error)
                assert "claims" in self.unswept.get(uid, ()) or uid == lock, (
                    "a gone resize's claim outlived the sweep", key)
        if lock is not None and lock not in live:
            assert ("lock" in self.unswept.get(lock, ())
                    or inst.status.phase is InstancePhase.ERROR), (
                "a gone resize's lock outlived the sweep, the Instance not in Error", lock)
        for r in live.values():
            phase = r.status.phase if r.status else None
            dest = r.status.dest_host if r.status else None
            rkey = f"VMResize/{r.uid}"
            if phase in HOLDS_DEST:
                assert held.get(rkey) == dest, (r.name, phase, held)
                assert lock == r.uid, (r.name, phase, lock)
            elif phase in MAY_HOLD_DEST:
                assert held.get(rkey) in (None, dest), (r.name, phase, held)
            else:
                assert rkey not in held, (r.name, phase, held)
            if phase is None or phase in ENDED:
                assert lock != r.uid, (r.name, phase)

    def _settled(self, uid: str) -> bool:
        """The operator has looked at the resize since its agents last reported (or a task
        was deleted), and none of its steps is under way (so the status says what the
        operator can know)."""
        if any(r.owner == uid for r in self.runs.values()):
            return False
        if any(t.spec.owner_uid == uid and (t.name in self.redo or (t.status is not None
                                            and t.status.phase is TaskPhase.RUNNING))
               for t in self.s.tasks()):
            return False   # accepted: its acts may be half done (a task not picked up: none)
        return self.seen_seq.get(uid, -1) > self.outcome_seq.get(uid, -2)

    @invariant()
    def never_running_while_off(self) -> None:
        """Invariant 11: the status never says Running for a VM that is off."""
        inst = self.s.instance(NS, "vm")
        assert inst is not None
        assert inst.status is not None
        live = [r for r in (self._resize(n) for n in NAMES) if r is not None]
        if any(r.status is not None and r.status.pending for r in live):
            return
        if any(r.owner not in {x.uid for x in live} for r in self.runs.values()):
            return   # an orphan's step is still in flight
        if any("lock" in self.unswept.get(uid, ()) for uid in self.forced):
            # A resize forced away before the operator saw its last outcome: nothing looks
            # at that until the lock sweep does (gone_holder), as _settled waits for a step.
            return
        for r in live:
            if not self._settled(r.uid):
                return
            if r.status is not None and r.status.phase is P.VERIFY_RESIZE:
                assert self.copies.get(r.status.dest_host or ""), (r.name, self.copies)
        if inst.status.power_state is PowerState.RUNNING:
            assert any(self.copies.values()), (inst.status.phase, inst.status.host,
                                               [(r.name, r.status.phase if r.status else None)
                                                for r in live], self.copies)


ResizeModel.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestResizeModel = ResizeModel.TestCase
