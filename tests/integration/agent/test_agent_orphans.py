"""An agent process that comes back to a host where an admin abandoned a copy (issue 18,
finding 6), against a real kube-apiserver with libvirt test:///default: before it takes any
task it deletes the copy's directory and marks the record on its Host cleaned; a record
that names another directory is refused and left for an admin."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.integration.agent.test_agent_process import WAIT, delete_host, host_doc
from tests.support.agent_harness import AgentProcess, write_migration_key
from tests.support.kube import kubectl
from tests.support.polling import wait_for

from vmresize.api.meta import API_VERSION


def test_agent_reaps_an_abandoned_copy_at_startup(kubeconfig: Path, namespace: str,
                                                  tmp_path: Path) -> None:
    name = f"h-{uuid.uuid4().hex[:8]}"
    agent = AgentProcess(name=name, workdir=tmp_path / name, address="127.0.0.2",
                         kubeconfig=kubeconfig, namespace=namespace,
                         key_file=write_migration_key(tmp_path / "migration_key"))
    uid, bad = str(uuid.uuid4()), str(uuid.uuid4())
    copy_dir = f"instances/{namespace}/vm/{uid}"
    disk = agent.storage_root / copy_dir / "disk.qcow2"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"the abandoned copy")
    other = agent.storage_root / "instances" / namespace / "keep.qcow2"
    other.write_bytes(b"not the copy")

    def record(owner_uid: str, where: str) -> dict[str, str]:
        return {"host": name, "owner": f"{namespace}/r", "ownerUid": owner_uid,
                "domainName": f"{namespace}.vm", "diskPath": f"{where}/disk.qcow2",
                "diskDir": where, "abandonedAt": "2026-01-01T00:00:00Z"}

    kubectl(kubeconfig, "create", "-f", "-", stdin=f"apiVersion: {API_VERSION}\nkind: Host\n"
            f"metadata:\n  name: {name}\n")
    try:
        kubectl(kubeconfig, "patch", "hosts.vmresize.io", name, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": {"orphans": {
                    uid: record(uid, copy_dir),
                    bad: record(bad, f"instances/{namespace}")}}}))   # not one placement's
        agent.start()

        def cleaned() -> dict[str, object] | None:
            if not agent.alive():
                raise AssertionError(f"agent exited:\n{agent.log_tail()}")
            doc = host_doc(kubeconfig, name) or {}
            orphans = doc.get("status", {}).get("orphans", {})
            return orphans if orphans.get(uid, {}).get("cleanedAt") else None

        orphans = wait_for(cleaned, timeout=WAIT, what=f"the orphan on {name} cleaned")
        assert not (agent.storage_root / copy_dir).exists()
        assert other.read_bytes() == b"not the copy"
        assert "cleanedAt" not in orphans[bad], "a record naming another directory is refused"
        assert orphans[uid]["domainName"] == f"{namespace}.vm", "the record itself is kept"
        assert "is not the directory of one placement" in agent.log_file.read_text()
    finally:
        agent.stop()
        delete_host(kubeconfig, name)
