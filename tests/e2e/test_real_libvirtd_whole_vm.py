"""On a real libvirtd, the agent's executor moves a whole VM between two storage roots.

The private daemon (``hack/libvirtd.py``, ``qemu+unix:///system?socket=…``) is what an agent
meets on a node. One daemon per machine, so both "hosts" share it: two executors with their
own storage roots, the files carried by the same-process transfer fake (the SSH service has
its own tests). The source's definition is held aside after the power-off, as the executor
does in VerifyResize, so the destination can define the same UUID. What this adds to the
embedded-driver tests: the definition captured from, and defined on, a real daemon's QEMU
driver, and the guest booting from it.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from hack import guest_domain as gd
from hack.guest import Guest, ensure_guest
from tests.e2e.test_real_libvirtd import daemon
from tests.e2e.test_whole_vm import INSTANCE_DIR, MACS, make_vm, sha
from tests.support.agent_steps import LocalNetwork, allow_all

from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor import domainxml
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.api import vmdisks
from vmresize.api.hosttask import HostTaskSpec, PeerHost, TaskAction, TaskFlavor

A = TaskAction
BOOT = 240.0  # TCG on 2 shared cores; a bound, not a benchmark
PEER = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused by the fake")


@pytest.fixture(scope="module")
def guest() -> Guest:
    try:
        return ensure_guest()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot build the test guest from Debian packages: {e}")


def spec(host: str, action: TaskAction, **kw: object) -> HostTaskSpec:
    return HostTaskSpec.model_validate({"host": host, "action": action, "owner": "ns/r",
                                        "instance": "ns/web-2", **kw})


async def test_real_daemon_moves_the_whole_vm_and_it_boots(guest: Guest, tmp_path: Path
                                                           ) -> None:
    a_root, b_root = tmp_path / "a", tmp_path / "b"
    a_root.mkdir()
    b_root.mkdir()
    name = f"lvw-{uuid.uuid4().hex[:6]}"
    xml, _ = make_vm(a_root, guest, name)
    with daemon(tmp_path / "libvirtd") as d:
        hv = LibvirtHypervisor(d.uri)
        net = LocalNetwork()
        a, b = (Executor(host=h, hypervisor=hv, storage_root=r,
                         transfer=net.endpoint(h, r.resolve()), fence=allow_all)
                for h, r in (("a", a_root), ("b", b_root)))
        try:
            hv.define_xml(xml)
            hv.start(name)
            gd.wait_serial(a_root / INSTANCE_DIR / "serial.log", lambda g: g.ready is not None,
                           timeout=BOOT, what="boot on the source")
            captured = hv.export(name)
            files = (await a.run(spec("a", A.ADOPT, domain_name=name))).result.disks or []
            shas = {f.path: sha(a.root / f.path) for f in files}
            wanted = vmdisks.destination(files, "instances/ns/web-2/new", "t1")
            await b.run(spec("b", A.PREPARE, disks=vmdisks.arrived(wanted), transfer_id="t1"))
            sent = (await a.run(spec("a", A.MIGRATE_DISK, domain_name=name,
                                     disk_path=files[0].path, peer=PEER, transfer_id="t1",
                                     disks=wanted, power_off_timeout_seconds=120))).result
            assert not hv.exists(name)  # off and held aside
            assert gd.read_serial(a_root / INSTANCE_DIR / "serial.log").shutdown_done
            assert {f.path: f.checksum for f in sent.disks or [] if f.path in shas} == shas
            landed = vmdisks.arrived(sent.disks or [])
            await b.run(spec("b", A.FINISH, domain_name=name, transfer_id="t1", disks=landed,
                             flavor=TaskFlavor(vcpus=2, memory_mib=192, disk_gib=1)))
            changed = domainxml.diff(captured, hv.export(name))
            print("definition fields changed on the real daemon:", sorted(changed))
            assert changed == {"vcpu", "memory", "currentMemory",
                               "devices/disk[vda]/source@file",
                               "devices/disk[vdb]/source@file",
                               "devices/disk[vdc]/source@file",
                               "devices/serial/source@path", "devices/console/source@path"}
            log = gd.wait_serial(b_root / "instances/ns/web-2/new/serial.log",
                                 lambda g: g.ready is not None, timeout=BOOT,
                                 what="boot on the destination")
            assert log.disks["vda"]["boot"] == "2"
            assert log.disks["vdb"] == {"bytes": str(16 * 1024**2), "serial": "vm-data",
                                        "boot": "43"}
            assert [log.nics[n]["mac"] for n in ("eth0", "eth1")] == list(MACS)
            await a.run(spec("a", A.CONFIRM, disks=files))
            assert [p for p in a_root.rglob("*") if p.is_file()] == []
        finally:
            for n in hv.list_domains():
                if n == name:
                    hv.destroy(n)
                    hv.undefine(n)
            hv.close()
