"""The destination's HealthCheck step: probe the running VM until it passes or time is up.

It changes nothing on the host; it only looks, so that the operator can confirm a
resize on evidence (a probe passed) or revert it on its own (none did by the deadline).

Probes (one per ``HealthCheck``; see :mod:`vmresize.api.health` for the API; a task
without one only asks whether the domain runs here, as the operator does before a timer's
auto-confirm deletes the source):

* ``guestAgent``: libvirt's qemu-agent-command ``guest-ping``. A domain without the agent
  channel can never pass, so the step fails at once with that reason;
* ``tcp``: a TCP connection to ``host:port`` opens;
* ``http``: ``GET path`` on ``host:port`` answers a 2xx status line (HTTP/1.1, no
  redirects followed, the body is not read).

``host`` is the address the user named; the probe goes out from the destination host's
network stack (asyncio streams: no shell, no proxy), and only to an address inside the
networks the agent was given (``VMRESIZE_HEALTH_PROBE_NETWORKS``): a name is resolved once,
every address it resolves to must be inside, and the probe connects to that address (a
second lookup could answer otherwise). Without networks, TCP and HTTP checks fail at once.
Each probe is bounded by ``PROBE_TIMEOUT`` and the deadline; between probes the step waits
``periodSeconds``. The fence is checked before every probe, so a check whose resize was
confirmed, reverted or deleted meanwhile stops instead of reporting a stale verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence

from vmresize.agent.errors import (
    DomainNotFoundError,
    FencedError,
    HealthCheckFailedError,
    HypervisorError,
    NoGuestAgentError,
    ProbeFailedError,
    TaskRefusedError,
)
from vmresize.agent.hypervisor.protocol import PowerState
from vmresize.agent.steps.context import Network, StepContext, StepOutcome
from vmresize.api.health import HealthCheck
from vmresize.api.hosttask import HostTaskSpec, TaskResult

log = logging.getLogger(__name__)
PROBE_TIMEOUT = 5.0
"""Bound on one probe (connect, or connect and read the status line), as a kubelet probe's
default timeout is a second: generous for a TCG guest on a busy host."""
DEFAULT_WINDOW = 300.0
"""A task without a deadline (none is created so) gives up after this long."""


def _why(e: OSError) -> str:
    """What a failed connect means, in words (asyncio's own text names only the call)."""
    return os.strerror(e.errno).lower() if e.errno else str(e)


async def allowed_address(host: str, port: int, networks: Sequence[Network]) -> str:
    """The one address of ``host`` to probe: :class:`HealthCheckFailedError` unless every address
    it resolves to lies inside ``networks`` (none: no address is allowed);
    :class:`ProbeFailedError` if the name does not resolve now (it may later)."""
    if not networks:
        raise HealthCheckFailedError(
            f"{host}:{port}: this host probes no network (its agent has no "
            "VMRESIZE_HEALTH_PROBE_NETWORKS); use a guestAgent check or ask the admin")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ProbeFailedError(f"{host}: does not resolve ({e})") from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for a in addresses:
        ip = ipaddress.ip_address(a.split("%")[0])
        if not any(ip.version == n.version and ip in n for n in networks):
            raise HealthCheckFailedError(
                f"{host}:{port}: {ip} is outside the networks this host probes "
                f"({', '.join(map(str, networks))})")
    if not addresses:
        raise ProbeFailedError(f"{host}: resolves to no address")
    return addresses[0]


async def probe_tcp(host: str, port: int, within: float,
                    networks: Sequence[Network]) -> str:
    """Pass if a TCP connection to ``host:port`` opens within ``within`` seconds."""
    address = await allowed_address(host, port, networks)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), within)
    except TimeoutError as e:
        raise ProbeFailedError(f"tcp {host}:{port}: no answer within {within:.0f}s") from e
    except OSError as e:
        raise ProbeFailedError(f"tcp {host}:{port}: {_why(e)}") from e
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return f"tcp {host}:{port} open"


async def probe_http(host: str, port: int, path: str, within: float,
                     networks: Sequence[Network]) -> str:
    """Pass if ``GET path`` on ``host:port`` answers 2xx within ``within`` seconds."""
    url = f"http://{host}:{port}{path}"
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    address = await allowed_address(host, port, networks)

    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection(address, port)
        try:
            # ``path`` and ``host`` are validated by the API's patterns: printable ASCII,
            # no spaces, so they cannot break the request line or add a header.
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {authority}\r\n"
                         "User-Agent: vmresize-agent\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        line = await asyncio.wait_for(ask(), within)
    except TimeoutError as e:
        raise ProbeFailedError(f"{url}: no answer within {within:.0f}s") from e
    except OSError as e:
        raise ProbeFailedError(f"{url}: {_why(e)}") from e
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProbeFailedError(f"{url}: not an HTTP answer ({line[:60]!r})")
    if not 200 <= int(parts[1]) < 300:
        raise ProbeFailedError(f"{url}: answered {parts[1]}, not 2xx")
    return f"{url} answered {parts[1]}"


async def probe(ctx: StepContext, name: str, check: HealthCheck, within: float) -> str:
    """One probe of ``check``: what passed, or ProbeFailedError (another may pass)."""
    if check.tcp is not None:
        return await probe_tcp(check.tcp.host, check.tcp.port, within,
                               ctx.probe_networks)
    if check.http is not None:
        return await probe_http(check.http.host, check.http.port, check.http.path,
                                within, ctx.probe_networks)
    try:
        await ctx.hv.guest_ping(name, max(1, int(within)))
    except NoGuestAgentError as e:
        raise HealthCheckFailedError(f"guest agent: {e}") from e
    except HypervisorError as e:   # not answering (yet): another probe may pass
        raise ProbeFailedError(f"guest agent: {e}") from e
    return "guest agent answered guest-ping"


async def still_runs(ctx: StepContext, spec: HostTaskSpec, name: str) -> StepOutcome:
    """A check without a probe (the timer's auto-confirm, before the source is deleted):
    pass if the domain runs here, fail at once (not retryable) if it does not or is not
    defined here."""
    why = await ctx.fence(spec, ctx.task_name)
    if why is not None:
        raise FencedError(f"fenced: the owner no longer asks whether {name} runs ({why})")
    try:
        state = await ctx.hv.state(name)
    except DomainNotFoundError as e:
        raise HealthCheckFailedError(f"domain {name} is not defined on this host") from e
    if state != PowerState.RUNNING:
        raise HealthCheckFailedError(f"domain {name} is {state.value}, not Running")
    return StepOutcome(TaskResult(domain_name=name, probes=0,
                                  power_state=PowerState.RUNNING.value),
                       f"domain {name} runs")


async def health_check(ctx: StepContext, spec: HostTaskSpec) -> StepOutcome:
    """HealthCheck: probe until one passes (the result and a sentence) or the deadline
    passes (:class:`HealthCheckFailedError` with the last probe's error); without a probe,
    :func:`still_runs`."""
    name, check = spec.domain_name, spec.health_check
    if not name:
        raise TaskRefusedError("HealthCheck needs spec.domainName")
    if check is None:
        return await still_runs(ctx, spec, name)
    deadline = (spec.deadline.timestamp() if spec.deadline
                else ctx.now() + DEFAULT_WINDOW)
    probes, last = 0, "no probe ran before the deadline"
    while True:
        why = await ctx.fence(spec, ctx.task_name)
        if why is not None:   # confirmed, reverted or deleted meanwhile: no verdict
            raise FencedError(f"fenced: the owner no longer asks for this check ({why})")
        state = await ctx.hv.state(name)
        if state != PowerState.RUNNING:
            raise HealthCheckFailedError(f"{check.describe()}: domain {name} is "
                                    f"{state.value}, not Running")
        left = deadline - ctx.now()
        if left <= 0:
            break
        probes += 1
        try:
            detail = await probe(ctx, name, check, min(PROBE_TIMEOUT, max(left, 0.1)))
        except ProbeFailedError as e:
            last = str(e)
            log.info("%s: probe %d failed: %s", name, probes, last)
        else:
            return StepOutcome(TaskResult(domain_name=name, probes=probes,
                                          power_state=PowerState.RUNNING.value),
                               f"{detail} (probe {probes})")
        pause = min(float(spec.period_seconds), deadline - ctx.now())
        if pause <= 0:
            break
        await asyncio.sleep(pause)
    raise HealthCheckFailedError(f"no probe passed by the deadline ({probes} probes); "
                            f"last: {last}")

