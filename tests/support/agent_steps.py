"""Helpers for driving :class:`vmresize.agent.executor.Executor` steps in unit tests:
a same-process stand-in for the disk transfer (plumbing only; the real asyncssh transfer
is tested in tests/integration/agent), task specs, and the spawn/move sequences."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.paths import confine
from vmresize.agent.transfer.seam import ProgressFn, Received, Sent, StepBandwidth
from vmresize.agent.transfer.sparse import disk_checksum
from vmresize.api import naming
from vmresize.api.hosttask import HostTaskSpec, PeerHost, PowerOff, TaskAction, TaskFlavor


class LocalNetwork:
    """A same-process stand-in for the SSH transfer (plumbing only; the real one is
    tested in tests/integration/agent against asyncssh)."""

    def __init__(self) -> None:
        self.roots: dict[str, Path] = {}
        self.expected: dict[str, dict[str, str]] = {}
        self.bandwidths: list[tuple[str, StepBandwidth | None]] = []  # (host, each step's)

    def endpoint(self, host: str, root: Path) -> LocalTransfer:
        self.roots[host] = root
        self.expected[host] = {}
        return LocalTransfer(self, host)


class LocalTransfer:
    def __init__(self, net: LocalNetwork, host: str) -> None:
        self.net, self.host = net, host

    def expect(self, transfer_id: str, rel_path: str, apparent_size: int, *,
               promised: int | None = None) -> None:
        self.net.expected[self.host][transfer_id] = rel_path

    def received(self, transfer_id: str) -> Received | None:
        rel = self.net.expected[self.host].get(transfer_id)
        if rel is None:
            return None
        path = confine(self.net.roots[self.host], rel)
        return Received(complete=path.exists(), checksum=None)

    def forget(self, transfer_id: str) -> None:
        self.net.expected[self.host].pop(transfer_id, None)

    def pending_bytes(self, directory: Path) -> int:
        return 0

    def step(self, bandwidth: StepBandwidth | None = None
             ) -> contextlib.AbstractAsyncContextManager[None]:
        self.net.bandwidths.append((self.host, bandwidth))
        return contextlib.nullcontext()

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        rel = self.net.expected[peer.name][transfer_id]
        dst = confine(self.net.roots[peer.name], rel)
        shutil.copyfile(src, dst)
        size = src.stat().st_size  # noqa: ASYNC240 - a tiny local file in a test fake
        if progress is not None:
            progress(size, size, 0.0)
        return Sent(checksum=disk_checksum(dst), size_bytes=size)


async def allow_all(spec: HostTaskSpec, task_name: str) -> str | None:
    """Tests of the steps themselves; the fence has its own tests."""
    return None


SMALL = TaskFlavor(vcpus=1, memory_mib=64, disk_gib=1)
BIG = TaskFlavor(vcpus=2, memory_mib=128, disk_gib=2)
SEED = "vmresize seed: hello from the source"


def spec(host: str, action: TaskAction, **kw: object) -> HostTaskSpec:
    return HostTaskSpec.model_validate({"host": host, "action": action, "owner": "ns/r",
                                        "instance": "ns/vm", **kw})


def names(uid: str) -> tuple[str, str, str, str]:
    return (naming.domain_name("ns", f"vm{uid[:6]}"),
            naming.disk_path("ns", f"vm{uid[:6]}", uid),
            naming.domain_name("ns", f"vm{uid[:6]}", "resize"),
            naming.disk_path("ns", f"vm{uid[:6]}", uid[::-1]))


async def spawn(ex: Executor, dom: str, rel: str) -> None:
    out = await ex.run(spec(ex.host, TaskAction.SPAWN, domain_name=dom, disk_path=rel,
                            flavor=SMALL, seed_pattern=SEED))
    assert out.result.power_state == PowerState.RUNNING.value


async def move(a: Executor, b: Executor, uid: str, progress: list[int]) -> str:
    """Spawn on a, prepare on b, migrate a→b; return the source checksum."""
    dom, rel, _, new_rel = names(uid)
    await spawn(a, dom, rel)
    size = (a.root / rel).stat().st_size
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=uid,
                     expected_bytes=size))
    peer = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")
    out = await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                           peer=peer, transfer_id=uid, power_off_timeout_seconds=1),
                      progress=lambda done, total, rate: progress.append(done))
    # Off and held: the definition is set aside, so nothing starts the source by accident.
    assert not a.hv.exists(dom)
    assert (a.root / (rel + ".held.xml")).is_file()
    assert out.result.power_state == PowerState.SHUTOFF.value
    # libvirt's test driver shuts a domain off as soon as it is asked: no force needed.
    assert out.result.power_off is PowerOff.GRACEFUL
    assert out.result.checksum == disk_checksum(a.root / rel)
    assert out.result.downtime_seconds is not None
    assert out.result.downtime_seconds >= 0
    return out.result.checksum


