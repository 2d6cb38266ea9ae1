"""The HealthCheck step against libvirt test:///default and real servers on 127.0.0.1.

The probes open real TCP connections to servers this test starts on loopback (a listening
socket, a tiny HTTP server answering a status chosen per path); the guest agent probe goes
through the libvirt adapter, whose test-driver domains have no guest agent channel.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tests.support.agent_steps import names, spawn, spec

from vmresize.agent.errors import FencedError, HealthCheckFailedError, ProbeFailedError, StepError
from vmresize.agent.executor import Executor
from vmresize.agent.settings import probe_networks
from vmresize.agent.steps.health import probe_http, probe_tcp
from vmresize.api.hosttask import HostTaskSpec, TaskAction

LOOPBACK = "127.0.0.1"
NETS = probe_networks("127.0.0.0/8")


class _Answer(BaseHTTPRequestHandler):
    """200 on /ok, 204 on /created, 503 elsewhere."""

    def do_GET(self) -> None:
        code = {"/ok": 200, "/created": 204}.get(self.path, 503)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    """A real HTTP server in a thread (not on the test's event loop: a probe must not
    depend on who serves)."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port


async def test_probes_pass_and_fail_for_real(http_port: int, closed_port: int) -> None:
    assert "open" in await probe_tcp(LOOPBACK, http_port, 2, NETS)
    assert "answered 200" in await probe_http(LOOPBACK, http_port, "/ok", 2, NETS)
    assert "answered 204" in await probe_http(LOOPBACK, http_port, "/created", 2, NETS)
    with pytest.raises(ProbeFailedError, match="answered 503, not 2xx"):
        await probe_http(LOOPBACK, http_port, "/down", 2, NETS)
    with pytest.raises(ProbeFailedError, match="refused"):
        await probe_tcp(LOOPBACK, closed_port, 2, NETS)
    with pytest.raises(ProbeFailedError, match="refused"):
        await probe_http(LOOPBACK, closed_port, "/ok", 2, NETS)


async def test_probes_reach_only_the_networks_the_agent_was_given(http_port: int) -> None:
    with pytest.raises(HealthCheckFailedError, match="probes no network"):
        await probe_tcp(LOOPBACK, http_port, 2, [])
    with pytest.raises(HealthCheckFailedError, match=r"127\.0\.0\.1 is outside .*10\.0\.0\.0/8"):
        await probe_http(LOOPBACK, http_port, "/ok", 2, probe_networks("10.0.0.0/8"))
    # a name is checked by what it resolves to, then probed at that address
    with pytest.raises(HealthCheckFailedError, match="is outside"):
        await probe_tcp("localhost", http_port, 2, probe_networks("10.0.0.0/8,fd00::/8"))


def check(dom: str, probe: dict[str, object], seconds: float = 10) -> HostTaskSpec:
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    return spec("a", TaskAction.HEALTH_CHECK, domain_name=dom, health_check=probe,
                deadline=deadline, period_seconds=1)


@pytest.fixture
async def running(agent_pair: tuple[Executor, Executor], agent_uid: str
                  ) -> AsyncIterator[tuple[Executor, str]]:
    a, _ = agent_pair
    dom, rel, _, _ = names(agent_uid)
    await spawn(a, dom, rel)
    yield a, dom
    await a.run(spec("a", TaskAction.DESTROY, domain_name=dom, disk_path=rel))


async def test_a_passing_http_check_succeeds(running: tuple[Executor, str],
                                             http_port: int) -> None:
    a, dom = running
    out = await a.run(check(dom, {"http": {"host": LOOPBACK, "port": http_port,
                                           "path": "/ok"}}))
    assert out.result.probes == 1
    assert f"http://{LOOPBACK}:{http_port}/ok answered 200" in out.message


async def test_a_failing_check_fails_at_the_deadline_with_the_last_error(
        running: tuple[Executor, str], http_port: int) -> None:
    a, dom = running
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(HealthCheckFailedError, match="answered 503") as err:
        await a.run(check(dom, {"http": {"host": LOOPBACK, "port": http_port,
                                         "path": "/down"}}, seconds=2.5))
    assert not err.value.retryable
    assert 2.0 <= loop.time() - began < 6, "probes until the deadline, and no longer"
    assert "3 probes" in str(err.value)


async def test_a_port_that_opens_later_passes(running: tuple[Executor, str],
                                              closed_port: int) -> None:
    a, dom = running
    task = asyncio.ensure_future(a.run(check(dom, {"tcp": {"host": LOOPBACK,
                                                           "port": closed_port}})))
    await asyncio.sleep(1.5)   # a guest still booting: the first probes are refused
    server = await asyncio.start_server(lambda r, w: w.close(), LOOPBACK, closed_port)
    try:
        out = await asyncio.wait_for(task, 10)
    finally:
        server.close()
        await server.wait_closed()
    assert out.result.probes is not None
    assert out.result.probes >= 2


async def test_no_guest_agent_channel_fails_at_once(running: tuple[Executor, str]) -> None:
    a, dom = running
    with pytest.raises(HealthCheckFailedError, match="no guest agent channel") as err:
        await asyncio.wait_for(a.run(check(dom, {"guestAgent": {}}, seconds=60)), 10)
    assert not err.value.retryable


async def test_a_stopped_vm_fails_at_once(running: tuple[Executor, str],
                                          http_port: int) -> None:
    a, dom = running
    a.hv.destroy(dom)
    with pytest.raises(HealthCheckFailedError, match="is Shutoff, not Running"):
        await a.run(check(dom, {"tcp": {"host": LOOPBACK, "port": http_port}}))


async def test_a_fenced_check_gives_no_verdict(running: tuple[Executor, str],
                                               http_port: int) -> None:
    a, dom = running

    async def superseded(s: HostTaskSpec, name: str) -> str | None:
        return "VMResize ns/r names task 'confirm-0'"

    fenced = Executor(host="a", hypervisor=a.hv, storage_root=a.root, transfer=a.transfer,
                      fence=superseded)
    with pytest.raises(FencedError):
        await fenced.run(check(dom, {"tcp": {"host": LOOPBACK, "port": http_port}}),
                         task_name="hc-0")


async def test_a_check_needs_its_domain(running: tuple[Executor, str]) -> None:
    a, _ = running
    with pytest.raises(StepError, match=r"spec\.domainName"):
        await a.run(spec("a", TaskAction.HEALTH_CHECK))


async def test_without_a_probe_it_only_asks_whether_the_domain_runs(
        running: tuple[Executor, str]) -> None:
    """The timer's auto-confirm looks before the source is deleted (issue 18, finding 7d):
    a running domain passes at once; a stopped or undefined one fails at once, for good
    (a retry would see the same), with what the agent saw."""
    a, dom = running
    out = await asyncio.wait_for(a.run(spec("a", TaskAction.HEALTH_CHECK, domain_name=dom)), 10)
    assert out.result.power_state == "Running"
    assert out.result.probes == 0
    assert "runs" in out.message
    a.hv.destroy(dom)
    with pytest.raises(HealthCheckFailedError, match="is Shutoff, not Running") as err:
        await a.run(spec("a", TaskAction.HEALTH_CHECK, domain_name=dom))
    assert not err.value.retryable
    with pytest.raises(HealthCheckFailedError, match="not defined on this host"):
        await a.run(spec("a", TaskAction.HEALTH_CHECK, domain_name=dom + "-elsewhere"))


async def test_a_fenced_look_gives_no_verdict(running: tuple[Executor, str]) -> None:
    a, dom = running

    async def superseded(s: HostTaskSpec, name: str) -> str | None:
        return "VMResize ns/r names task 'revert-0'"

    fenced = Executor(host="a", hypervisor=a.hv, storage_root=a.root, transfer=a.transfer,
                      fence=superseded)
    with pytest.raises(FencedError):
        await fenced.run(spec("a", TaskAction.HEALTH_CHECK, domain_name=dom), task_name="hc-0")
