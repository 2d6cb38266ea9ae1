"""Two hosts for pre-copy tests, in one process: the real executor, real QEMU, real SSH.

Each host is an :class:`~vmresize.agent.executor.Executor` on its own storage root with
its own asyncssh migration server on 127.0.0.1 (pinned host keys); both share one embedded
libvirt (a process can open one), so the destination's domain gets another name. The
guest is the booting test guest (``hack/guest.py``) with its writer on ``vdb``: numbered,
fsync'd records until it is powered off.

"Killing" an agent is modelled by :class:`Crash`: the step is cut at a chosen file's
transfer (the coroutine is cancelled mid-send and a :class:`Killed` raised, which nothing
in the agent catches, as nothing runs after a SIGKILL), then a *new* executor takes the
same task, with only what is on disk and in libvirt to go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from hack import guest_domain as gd
from hack import guest_init
from hack.guest import Guest

from vmresize.agent.executor import Executor, StepOutcome
from vmresize.agent.hypervisor import embedded
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.transfer.keys import generate_key, load_or_create_host_key, public_openssh
from vmresize.agent.transfer.seam import ProgressFn, Sent, Transfer
from vmresize.agent.transfer.server import MigrationServer, start_migration_server
from vmresize.agent.transfer.service import SshTransfer
from vmresize.agent.vmfiles import wholevm
from vmresize.api import vmdisks
from vmresize.api.hosttask import HostTaskSpec, PeerHost, TaskAction, TaskFlavor
from vmresize.api.vmdisks import VMDisk

A = TaskAction
MiB = 1 << 20
BOOT = 240.0  # TCG on 2 shared cores: a bound, not a benchmark
INSTANCE_DIR = "instances/ns/vm"
FLAVOR = TaskFlavor(vcpus=1, memory_mib=128, disk_gib=1)


class Killed(BaseException):
    # A SIGKILL is not an error the agent sees: nothing may catch it.
    """The agent process "died" here."""


@dataclass
class Crash:
    """A transfer that dies while sending ``transfer_id`` (after ``after`` seconds)."""

    real: Transfer
    transfer_id: str | None = None
    after: float = 0.05
    hit: bool = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    async def send(self, *, src: Path, peer: PeerHost, transfer_id: str,
                   progress: ProgressFn | None) -> Sent:
        if transfer_id != self.transfer_id or self.hit:
            return await self.real.send(src=src, peer=peer, transfer_id=transfer_id,
                                        progress=progress)
        self.hit = True
        task = asyncio.ensure_future(self.real.send(src=src, peer=peer,
                                                    transfer_id=transfer_id,
                                                    progress=progress))
        await asyncio.sleep(self.after)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise Killed(f"killed while sending {transfer_id}")


async def _ok(spec: HostTaskSpec, task: str) -> None:
    return None


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def writer_records(path: Path, fmt: str = "qcow2") -> list[int]:
    """The guest writer's sequence numbers on a disk (read shared: QEMU may hold it)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "d.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(path),
                        str(raw)], check=True, capture_output=True, timeout=300)
        with raw.open("rb") as f:
            f.seek(guest_init.WRITER_OFFSET)
            ring = f.read(guest_init.WRITER_SLOTS * guest_init.SECTOR)
    return [int(m) for m in re.findall(rb"VMRESIZE-WRITER seq=(\d+)\n", ring)]


@dataclass
class Rig:
    """Both hosts, the VM's files on the source, and the task specs of one move."""

    base: Path
    hv: LibvirtHypervisor
    guest: Guest
    servers: dict[str, MigrationServer] = field(default_factory=dict)
    client_key: object = None
    name: str = "pcvm"
    tid: str = "u1-xfer"
    files: list[VMDisk] = field(default_factory=list)
    dest_dir: str = "instances/ns/vm/u1"

    def root(self, host: str) -> Path:
        return self.base / host

    def executor(self, host: str, crash: str | None = None, after: float = 0.05
                 ) -> tuple[Executor, Crash]:
        real = SshTransfer(self.servers[host], self.client_key)  # type: ignore[arg-type]
        t = Crash(real, crash, after)
        return Executor(host=host, hypervisor=self.hv, storage_root=self.root(host),
                        transfer=t, fence=_ok), t

    def peer(self, host: str) -> PeerHost:
        s = self.servers[host]
        return PeerHost(name=host, address="127.0.0.1", port=s.port,
                        host_key=public_openssh(self.host_keys[host]))

    host_keys: dict[str, object] = field(default_factory=dict)

    def make_vm(self, data_mib: int, root_image: Path | None = None,
                data_cluster: str = "64k", **options: str) -> None:
        """Root disk with ``data_mib`` MiB of random data (or a copy of ``root_image``, a
        qcow2 :func:`root_disk` made); the writer's disk ``vdb`` (qcow2 clusters of
        ``data_cluster``); ``options``: more of the guest's ``vmresize.*`` kernel arguments
        (``hack/guest_init.py``). The instance directory may exist already (a filesystem
        of its own mounted there)."""
        d = self.root("a") / INSTANCE_DIR
        d.mkdir(parents=True, exist_ok=True)
        if root_image is None:
            root_disk(d / "root.qcow2", data_mib)
        else:
            shutil.copyfile(root_image, d / "root.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                        f"cluster_size={data_cluster}", str(d / "data.qcow2"), "16M"],
                       check=True, timeout=60)
        xml = gd.domain_xml(self.name, self.guest, disks=[
            gd.Disk(d / "root.qcow2", "vda", "qcow2"), gd.Disk(d / "data.qcow2", "vdb",
                                                               "qcow2")],
            macs=[], serial_log=d / "serial.log", memory_mib=128, writer="vdb",
            writer_delay_ms="5", marker="off", **options)
        self.hv.define_xml(xml)
        self.hv.start(self.name)
        self.files = wholevm.adopted(self.hv.export(self.name), self.root("a"), self.name)[0]

    def serial(self, host: str = "a", where: str | None = None) -> Path:
        return self.root(host) / (where or INSTANCE_DIR) / "serial.log"

    async def booted(self, host: str = "a", where: str | None = None) -> gd.GuestLog:
        return await asyncio.to_thread(
            gd.wait_serial, self.serial(host, where),
            lambda g: g.ready is not None and g.writer_seen, timeout=BOOT, what="boot")

    def moved(self, pre_copy: bool = True) -> list[VMDisk]:
        return vmdisks.destination(self.files, self.dest_dir, self.tid, pre_copy=pre_copy,
                                   virtual_bytes=1 << 30)

    def spec(self, action: TaskAction, **kw: object) -> HostTaskSpec:
        host = "b" if action in (A.PREPARE, A.FINISH, A.CLEANUP_DEST) else "a"
        return HostTaskSpec(host=host, action=action, owner="ns/r", owner_uid="u1",
                            instance="ns/vm", **kw)  # type: ignore[arg-type]

    def prepare(self, pre_copy: bool = True) -> HostTaskSpec:
        return self.spec(A.PREPARE, transfer_id=self.tid, disk_path=f"{self.dest_dir}/x",
                         disks=vmdisks.arrived(self.moved(pre_copy)))

    def migrate(self, pre_copy: bool = True) -> HostTaskSpec:
        return self.spec(A.MIGRATE_DISK, domain_name=self.name, disk_path=self.files[0].path,
                         peer=self.peer("b"), transfer_id=self.tid,
                         disks=self.moved(pre_copy), power_off_timeout_seconds=60)

    def finish(self, sent: list[VMDisk]) -> HostTaskSpec:
        return self.spec(A.FINISH, domain_name=self.name + "-b", flavor=FLAVOR,
                         transfer_id=self.tid, disk_path=f"{self.dest_dir}/root.qcow2",
                         disks=vmdisks.arrived(sent))

    def cleanup(self) -> HostTaskSpec:
        return self.spec(A.CLEANUP_DEST, domain_name=self.name + "-b", transfer_id=self.tid,
                         disks=vmdisks.arrived(self.moved()))

    def restore(self) -> HostTaskSpec:
        return self.spec(A.RESTORE_SOURCE, domain_name=self.name,
                         disk_path=self.files[0].path, flavor=FLAVOR)

    def confirm(self) -> HostTaskSpec:
        return self.spec(A.CONFIRM, domain_name=self.name, disk_path=self.files[0].path,
                         disks=self.files)

    def chain(self) -> dict[str, str]:
        """sha256 of every file of the source's chain now (disks, overlays)."""
        d = self.root("a") / INSTANCE_DIR
        return {p.name: sha(p) for p in sorted(d.glob("*.qcow2"))}

    def dest(self, name: str) -> Path:
        return self.root("b") / self.dest_dir / name


def root_disk(path: Path, data_mib: int) -> Path:
    """A qcow2 with ``data_mib`` MiB of random data (virtual size: the larger of 1 GiB and
    what the data needs)."""
    raw = path.with_name(path.name + ".raw")
    with raw.open("wb") as f:
        f.truncate(max(1 << 30, (data_mib + 16) * MiB))
        f.seek(8 * MiB)
        for _ in range(data_mib):
            f.write(os.urandom(MiB))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                    str(path)], check=True, timeout=900)
    raw.unlink()
    return path


def hypervisor(root: Path) -> LibvirtHypervisor:
    """The one embedded libvirt of the process (QEMU reaped by us), at ``root``."""
    embedded.become_subreaper()
    embedded.start_reaper(only="qemu-system")
    return LibvirtHypervisor(embedded.embed_uri(root))


@contextlib.asynccontextmanager
async def rig(guest: Guest, hv: LibvirtHypervisor, name: str) -> AsyncIterator[Rig]:
    """Both hosts; everything they made is removed afterwards (domains too)."""
    base = Path(tempfile.mkdtemp(prefix="pc", dir="/tmp"))
    r = Rig(base=base, hv=hv, guest=guest, client_key=generate_key(), name=name)
    try:
        for h in ("a", "b"):
            r.root(h).mkdir()
            key = load_or_create_host_key(base / f"{h}-state")
            r.host_keys[h] = key
            r.servers[h] = await start_migration_server(
                root=r.root(h), host_key=key,
                authorized_keys=[public_openssh(r.client_key)],  # type: ignore[arg-type]
                host="127.0.0.1")
        yield r
    finally:
        for s in r.servers.values():
            await s.close()
        for dom in hv.list_domains():
            if dom.startswith(name):
                with contextlib.suppress(Exception):
                    hv.destroy(dom)
                with contextlib.suppress(Exception):
                    hv.undefine(dom)
        shutil.rmtree(base, ignore_errors=True)


async def run(ex: Executor, spec: HostTaskSpec) -> StepOutcome:
    return await ex.run(spec, task_name="t")
