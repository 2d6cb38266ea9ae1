"""Everything under tests/e2e runs real QEMU VMs through libvirt's embedded driver.

Most tests run it in agent processes. The few that open it in the test process share
:func:`embedded_root`: libvirt opens the embedded QEMU driver once per process, at one
path, and refuses another path after that ("already open with path ...").
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack.guest import Guest, ensure_guest

from vmresize.agent.hypervisor import embedded


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def guest() -> Guest:
    """The booting test guest (``make guest`` builds it into the cache; this builds it if
    it is missing). A guest that cannot be built is an error, never a skip: ``make test``
    installs what it needs, so a skip here would hide a broken install step."""
    return ensure_guest()


@pytest.fixture(scope="session")
def embedded_root() -> Iterator[Path]:
    """The one embedded libvirt root of this pytest process (a short path: QEMU's monitor
    socket paths under it must fit a UNIX address). QEMU is reaped by this process."""
    embedded.become_subreaper()
    embedded.start_reaper(only="qemu-system")  # never our own Popen children (qemu-img)
    embedded.start_event_loop()
    root = embedded.prepare_root(Path(tempfile.mkdtemp(prefix="ve-", dir="/tmp")))
    yield root
    shutil.rmtree(root, ignore_errors=True)
