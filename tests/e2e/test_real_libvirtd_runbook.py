"""The runbook's virsh commands (docs/operations.md), run as written on a real libvirtd.

Issue 18, finding 6: the runbook told an admin to ``virsh start`` a source that a resize
holds, but the held source is not defined (its definition lies next to its disk). Here the
agent's own steps (Spawn, Prepare, MigrateDisk, Finish) leave a real daemon (``hack/
libvirtd.py``) the way a dead destination leaves the hosts: the source off and held, the
new copy running on the destination. Then each block of the runbook that carries a
``<!-- runbook: NAME -->`` tag is taken from the document, unchanged, and run by bash with
its variables set and ``VIRSH_DEFAULT_CONNECT_URI`` naming the daemon: the source runs
again from exactly its own definition, and the abandoned copy is gone with its directory,
which the agent's reaper then finds already done.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.e2e.test_real_libvirtd import daemon
from tests.support.agent_steps import BIG, LocalNetwork, allow_all, names, spawn, spec

from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.api.host import OrphanCopy
from vmresize.api.hosttask import PeerHost, TaskAction

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
BLOCK = re.compile(r"<!-- runbook: (?P<name>[a-z-]+) -->\n(?P<indent> *)```sh\n(?P<body>.*?)"
                   r"^ *```", re.S | re.M)


def runbook() -> dict[str, str]:
    """The tagged shell blocks of docs/operations.md, by tag, dedented."""
    return {m["name"]: textwrap.dedent(m["body"]) for m in BLOCK.finditer(DOCS.read_text())}


def run_block(name: str, uri: str, **env: str) -> str:
    body = runbook()[name]
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", body], capture_output=True,
                         text=True, timeout=120, check=False,
                         env={**os.environ, "VIRSH_DEFAULT_CONNECT_URI": uri, **env})
    assert out.returncode == 0, f"runbook block {name} failed:\n{body}\n{out.stderr}"
    return out.stdout


def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          timeout=60, check=False)


async def move(a: Executor, b: Executor, uid: str) -> str:
    """Spawn on a, prepare on b, MigrateDisk a -> b (a guest with no OS ignores ACPI: forced
    off after 1 s); the source checksum."""
    dom, rel, _, new_rel = names(uid)
    await spawn(a, dom, rel)
    size = (a.root / rel).stat().st_size
    await b.run(spec("b", TaskAction.PREPARE, disk_path=new_rel, transfer_id=uid,
                     expected_bytes=size))
    peer = PeerHost(name="b", address="127.0.0.3", port=2222, host_key="unused-here")
    out = await a.run(spec("a", TaskAction.MIGRATE_DISK, domain_name=dom, disk_path=rel,
                           peer=peer, transfer_id=uid, power_off_timeout_seconds=1))
    assert out.result.checksum is not None
    return out.result.checksum


def test_the_runbook_names_the_blocks_this_test_runs() -> None:
    blocks = runbook()
    assert set(blocks) >= {"start-held-source", "destroy-abandoned-copy"}
    assert "virsh define" in blocks["start-held-source"]


@pytest.mark.timeout(900)
async def test_runbook_restarts_the_held_source_and_removes_the_abandoned_copy(
        tmp_path: Path) -> None:
    uid = os.urandom(16).hex()
    dom, rel, new_dom, new_rel = names(uid)
    with daemon(tmp_path / "lvd") as d:
        hv = LibvirtHypervisor(d.uri)
        net = LocalNetwork()
        ex = {}
        for host in ("a", "b"):
            root = tmp_path / host
            root.mkdir()
            ex[host] = Executor(host=host, hypervisor=hv, storage_root=root,
                                transfer=net.endpoint(host, root.resolve()), fence=allow_all)
        a, b = ex["a"], ex["b"]
        try:
            checksum = await move(a, b, uid)   # spawned on a, off and held, sent to b
            held = a.root / (rel + ".held.xml")
            own = held.read_text()
            assert not hv.exists(dom), "held: the source is not defined"
            await b.run(spec("b", TaskAction.FINISH, domain_name=new_dom, disk_path=new_rel,
                             flavor=BIG, expected_checksum=checksum, transfer_id=uid))
            assert hv.state(new_dom) == PowerState.RUNNING

            # What the runbook said before: `virsh start` the source. It is not defined.
            old = virsh(d.uri, "start", dom)
            assert old.returncode != 0
            assert "failed to get domain" in old.stderr, old.stderr
            # RollbackFailed, source side: define the held definition again and start it.
            run_block("start-held-source", d.uri, DOMAIN=dom, DISK=rel, ROOT=str(a.root))
            assert hv.state(dom) == PowerState.RUNNING
            assert hv.definition(dom) == own, "exactly its own definition"
            assert not held.exists()

            # The abandoned copy, by hand on the host that came back without its agent.
            copy_dir = posixpath.dirname(new_rel)
            out = run_block("destroy-abandoned-copy", d.uri, DOMAIN=new_dom, DIR=copy_dir,
                            ROOT=str(b.root))
            assert str(b.root / new_rel) in out, "domblklist shows the copy's disk"
            assert not hv.exists(new_dom)
            assert not (b.root / copy_dir).exists()
            assert hv.state(dom) == PowerState.RUNNING, "the source is never touched"

            # The agent, once back, finds nothing left to do (and marks the record).
            orphan = OrphanCopy(host="b", owner="ns/r", owner_uid=uid[::-1],
                                domain_name=new_dom, disk_path=new_rel, disk_dir=copy_dir,
                                abandoned_at=datetime.now(UTC))
            assert await b.reap_orphan(orphan) == "nothing left"
        finally:
            for name in (dom, new_dom):
                if hv.exists(name):
                    hv.destroy(name)
                    hv.undefine(name)
            hv.close()
