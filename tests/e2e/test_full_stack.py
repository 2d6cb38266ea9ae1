"""The whole stack on real QEMU: the real operator process and three real agent processes.

One module-wide :class:`Stack` (see ``tests.support.full_stack_harness``): the operator
(``python -m vmresize.operator --standalone --namespace <ns>``) and three agents, each one
hypervisor host with its own ``qemu:///embed`` root, storage root and migration address
(127.0.0.2-4), against the session's real kube-apiserver. The tests only do what a user
does (create Flavors, an Instance, a VMResize; patch confirm or revert) and then check the
ground truth: the QEMU processes (``-smp``/``-m``), the domains defined in each embedded
root, and the disks, by what a guest would read from them (sha256 of the raw content).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.full_stack_harness import (
    FLAVORS,
    GIB,
    Stack,
    content_sha256,
    domain_defined,
    qemu_args,
    qemu_pid,
    qemu_vcpus_mib,
    virtual_size,
)

from vmresize.agent.hypervisor import embedded
from vmresize.agent.transfer.sparse import disk_checksum
from vmresize.agent.vmfiles import disks

SMALL, BIG = FLAVORS["small"], FLAVORS["big"]


@pytest.fixture(scope="module")
def stack(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    embedded.become_subreaper()  # QEMU outlives a stopped agent and comes to us
    embedded.start_reaper(only="qemu-system")  # never our own Popen children
    s = Stack(kubeconfig, tmp_path_factory.mktemp("full-stack"))
    try:
        yield s.start()
    finally:
        s.close()


def running_flavor(s: Stack, host: str, domain: str) -> tuple[int, int]:
    """(vCPUs, RAM MiB) of the QEMU process that runs ``domain`` on ``host``."""
    argv = qemu_args(s.agents[host], domain)
    assert argv is not None, f"no QEMU process runs {domain} on {host}\n{s.diagnostics()}"
    return qemu_vcpus_mib(argv)


def held(s: Stack, kind: str, name: str) -> dict[str, tuple[int, int, int]]:
    """Where the claim of ``kind/ns/name`` is held (host -> vCPUs, MiB, GiB)."""
    key = f"{kind}/{s.ns}/{name}"
    return {host: c[key] for host, c in s.claims().items() if key in c}


def boot(s: Stack, name: str, seed: str) -> dict[str, Any]:
    """An Active instance of the small flavor, checked against its QEMU process and disk."""
    inst = s.create_instance(name, "small", seed)
    assert inst["host"] in s.agents
    assert (inst["vcpus"], inst["memoryMiB"], inst["diskGiB"]) == SMALL
    assert running_flavor(s, inst["host"], inst["domainName"]) == SMALL[:2]
    root = s.agents[inst["host"]].storage_root
    assert disks.read_head(root, inst["diskPath"], len(seed)) == seed.encode()
    assert virtual_size(root / inst["diskPath"]) == SMALL[2] * GIB
    assert held(s, "Instance", name) == {inst["host"]: SMALL}
    return inst


def moved(s: Stack, inst: dict[str, Any], st: dict[str, Any]) -> tuple[Path, Path]:
    """Checks common to every resize in VerifyResize; returns (source disk, dest disk)."""
    src, dst = st["sourceHost"], st["destHost"]
    assert src == inst["host"]
    assert dst in s.agents
    assert dst != src
    src_disk = s.agents[src].storage_root / inst["diskPath"]
    dst_disk = s.agents[dst].storage_root / st["destDiskPath"]
    # The source is powered off but kept: disk and its definition, held aside so nothing
    # starts it by accident (RestoreSource defines it again), no QEMU.
    assert src_disk.exists()
    assert not domain_defined(s.agents[src], inst["domainName"])
    assert src_disk.with_name(src_disk.name + ".held.xml").is_file()
    assert qemu_pid(s.agents[src], inst["domainName"]) is None
    # The recorded checksum is the powered-off source's, byte for byte (the disk checksum:
    # a sha256 over the file's content, see vmresize.agent.transfer.sparse).
    assert disk_checksum(src_disk) == st["sourceChecksum"]
    assert dst_disk.exists()
    assert domain_defined(s.agents[dst], st["destDomainName"])
    return src_disk, dst_disk


def test_resize_then_confirm(stack: Stack) -> None:
    s = stack
    inst = boot(s, "vm-confirm", "full-stack e2e: resize then confirm")
    size = SMALL[2] * GIB
    before = content_sha256(s.agents[inst["host"]].storage_root / inst["diskPath"], size)

    st = s.resize("grow", "vm-confirm", "big")
    assert (st["oldFlavor"], st["newFlavor"]) == (s.flavor("small"), s.flavor("big"))
    src_disk, dst_disk = moved(s, inst, st)
    dst, dst_dom = st["destHost"], st["destDomainName"]
    # The guest sees the same first GiB on the destination; the disk grew behind it.
    assert content_sha256(src_disk, size) == before
    assert content_sha256(dst_disk, size) == before
    assert virtual_size(dst_disk) == BIG[2] * GIB
    assert running_flavor(s, dst, dst_dom) == BIG[:2]
    dst_pid = qemu_pid(s.agents[dst], dst_dom)
    # The whole VM moved: its NIC (the MAC generated once at Spawn) and each file, checked.
    mac = inst["interfaces"][0]["mac"]
    assert f'"mac":"{mac}"' in Path(f"/proc/{dst_pid}/cmdline").read_bytes().decode()
    # Pre-copy (the default): the disk went while the VM ran, its overlay after the
    # power-off, merged into the disk on arrival (nothing of it is left there).
    assert [(f["role"], f["path"] == inst["diskPath"]) for f in st["sourceDisks"]] == [
        ("Disk", True), ("Definition", False), ("Overlay", False)]
    assert st["sourceDisks"][2]["path"] == inst["diskPath"] + ".vmresize-overlay.qcow2"
    assert not dst_disk.with_name(dst_disk.name + ".vmresize-overlay.qcow2").exists()
    assert st["sourceDisks"][0]["checksum"] == st["sourceChecksum"]
    assert 0 < st["downtimeSeconds"] < 60  # seen off to the destination's start
    assert s.status("instances", "vm-confirm")["phase"] == "Resizing"
    # This guest has no OS to answer ACPI: it was forced off after the operator's 1 s.
    assert s.task("grow", "MigrateDisk")["status"]["result"]["powerOff"] == "Forced"
    # As in Nova, both copies are claimed until the user decides.
    assert held(s, "Instance", "vm-confirm") == {st["sourceHost"]: SMALL}
    assert held(s, "VMResize", "grow") == {dst: BIG}

    s.decide("grow", "confirm")
    src = s.agents[st["sourceHost"]]
    assert not src_disk.exists()
    assert not src_disk.parent.exists()
    assert not domain_defined(src, inst["domainName"])
    assert qemu_pid(src, inst["domainName"]) is None
    # Confirm never touches the destination: the same QEMU process still runs it.
    assert qemu_pid(s.agents[dst], dst_dom) == dst_pid
    assert running_flavor(s, dst, dst_dom) == BIG[:2]
    now = s.status("instances", "vm-confirm")
    assert (now["phase"], now["host"], now["flavor"]) == ("Active", dst, s.flavor("big"))
    assert (now["vcpus"], now["memoryMiB"], now["diskGiB"]) == BIG
    assert (now["domainName"], now["diskPath"]) == (dst_dom, st["destDiskPath"])
    assert [f["path"] for f in now["disks"]] == [st["destDiskPath"],
                                                 str(Path(st["destDiskPath"]).parent
                                                     / "domain.xml")]
    assert now["interfaces"] == inst["interfaces"]
    assert held(s, "Instance", "vm-confirm") == {dst: BIG}
    assert held(s, "VMResize", "grow") == {}


def test_resize_then_revert(stack: Stack) -> None:
    s = stack
    inst = boot(s, "vm-revert", "full-stack e2e: resize then revert")
    size = SMALL[2] * GIB
    src_disk = s.agents[inst["host"]].storage_root / inst["diskPath"]
    before = content_sha256(src_disk, size)

    st = s.resize("grow-back", "vm-revert", "big")
    src_disk, dst_disk = moved(s, inst, st)
    dst, dst_dom = s.agents[st["destHost"]], st["destDomainName"]
    assert running_flavor(s, dst.name, dst_dom) == BIG[:2]
    assert content_sha256(dst_disk, size) == before

    s.decide("grow-back", "revert")
    # The instance runs on its source again, with its old flavor and its untouched disk.
    assert running_flavor(s, inst["host"], inst["domainName"]) == SMALL[:2]
    assert content_sha256(src_disk, size) == before
    assert disk_checksum(src_disk) == st["sourceChecksum"]
    assert virtual_size(src_disk) == SMALL[2] * GIB
    # The destination copy is gone: no QEMU, no domain, no disk directory.
    assert qemu_pid(dst, dst_dom) is None
    assert not domain_defined(dst, dst_dom)
    assert not dst_disk.parent.exists()
    now = s.status("instances", "vm-revert")
    assert (now["phase"], now["host"], now["flavor"]) == ("Active", inst["host"],
                                                          s.flavor("small"))
    assert (now["vcpus"], now["memoryMiB"], now["diskGiB"]) == SMALL
    assert (now["domainName"], now["diskPath"]) == (inst["domainName"], inst["diskPath"])
    assert held(s, "Instance", "vm-revert") == {inst["host"]: SMALL}
    assert held(s, "VMResize", "grow-back") == {}


def test_cold_migration_then_confirm(stack: Stack) -> None:
    s = stack
    inst = boot(s, "vm-migrate", "full-stack e2e: cold migration")
    size = SMALL[2] * GIB
    before = content_sha256(s.agents[inst["host"]].storage_root / inst["diskPath"], size)

    st = s.resize("move", "vm-migrate", None)
    assert st["oldFlavor"] == st["newFlavor"] == s.flavor("small")
    src_disk, dst_disk = moved(s, inst, st)
    dst, dst_dom = st["destHost"], st["destDomainName"]
    assert running_flavor(s, dst, dst_dom) == SMALL[:2]
    assert virtual_size(dst_disk) == SMALL[2] * GIB
    assert content_sha256(dst_disk, size) == before
    assert held(s, "VMResize", "move") == {dst: SMALL}

    s.decide("move", "confirm")
    assert not src_disk.exists()
    assert qemu_pid(s.agents[inst["host"]], inst["domainName"]) is None
    assert not domain_defined(s.agents[inst["host"]], inst["domainName"])
    assert running_flavor(s, dst, dst_dom) == SMALL[:2]
    now = s.status("instances", "vm-migrate")
    assert (now["phase"], now["host"], now["flavor"]) == ("Active", dst, s.flavor("small"))
    assert (now["domainName"], now["diskPath"]) == (dst_dom, st["destDiskPath"])
    assert held(s, "Instance", "vm-migrate") == {dst: SMALL}
    assert held(s, "VMResize", "move") == {}
