"""Fixtures of the agent unit tests: libvirt test:///default and two executors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.agent_steps import LocalNetwork, allow_all

from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.settings import probe_networks


@pytest.fixture(scope="session")
def agent_hv() -> Iterator[LibvirtHypervisor]:
    hv = LibvirtHypervisor("test:///default")
    yield hv
    hv.close()


@pytest.fixture
def agent_pair(agent_hv: LibvirtHypervisor, tmp_path: Path) -> tuple[Executor, Executor]:
    """Executors of hosts ``a`` and ``b`` sharing one test driver, each its own root."""
    net = LocalNetwork()
    out = []
    for host in ("a", "b"):
        root = tmp_path / host
        root.mkdir()
        out.append(Executor(host=host, hypervisor=agent_hv, storage_root=root,
                            transfer=net.endpoint(host, root.resolve()), fence=allow_all,
                            probe_networks=probe_networks("127.0.0.0/8")))
    return out[0], out[1]


@pytest.fixture
def agent_uid() -> str:
    return uuid.uuid4().hex


