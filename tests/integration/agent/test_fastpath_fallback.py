"""The transfer's fast path proves itself at startup or steps aside (fastpath_check).

The self-test runs here on the versions installed (the lock's, or the newest ones under
``make test-latest``): it passes, and a broken fast path (an exception as cryptography 51
raised, or a silent bit flip) fails it, is uninstalled, and a disk still moves intact on
asyncssh's own path. The agent-process tier runs a whole resize with the fast path broken
(tests/integration/agent/test_agent_process.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support import broken_fastpath

from vmresize.agent.transfer import fastpath, fastpath_check
from vmresize.agent.transfer.client import send_disk
from vmresize.agent.transfer.server import MigrationServer
from vmresize.agent.transfer.sparse import disk_checksum

from .conftest import MiB, XferKeys

pytestmark = pytest.mark.asyncio(loop_scope="session")
DISK = "instances/ns/vm/fast1234/disk.qcow2"


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    """Every other transfer test runs on the fast path: leave it as found."""
    yield
    broken_fastpath.mend()
    assert fastpath.install()


async def test_self_test_passes_on_the_installed_versions() -> None:
    fastpath.uninstall()
    state = await fastpath_check.enable(True)
    assert (state.active, state.reason) == (True, "SelfTestPassed"), state.message
    assert fastpath.installed()
    assert "asyncssh 2." in state.message
    assert "cryptography" in state.message


async def test_turned_off_it_is_not_installed() -> None:
    state = await fastpath_check.enable(False)
    assert (state.active, state.reason) == (False, "Disabled")
    assert not fastpath.installed()


@pytest.mark.parametrize("mode", ["raises", "corrupts"])
async def test_a_broken_fast_path_fails_its_self_test_and_the_stock_path_moves_the_disk(
        mode: str, xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_root: Path,
        xfer_file: Callable[[str, int, dict[int, int]], Path]) -> None:
    fastpath.uninstall()
    broken_fastpath.break_it(mode)
    state = await fastpath_check.enable(True)
    assert (state.active, state.reason) == (False, "SelfTestFailed")
    assert "asyncssh's own path is used" in state.message
    if mode == "raises":
        assert "must not overlap" in state.message
    assert not fastpath.installed()
    # the same broken object would corrupt or fail every packet: the stock path never uses it
    src = xfer_file("disk.img", 64 * MiB, {0: 3 * MiB, 40 * MiB: 5 * MiB + 7})
    xfer_server.expect("t-stock", DISK, 64 * MiB)
    result = await send_disk(src=src, address="127.0.0.1", port=xfer_server.port,
                             host_key=xfer_keys.host_pub, client_key=xfer_keys.client,
                             transfer_id="t-stock")
    assert result.checksum == disk_checksum(src) == disk_checksum(xfer_root / DISK)
