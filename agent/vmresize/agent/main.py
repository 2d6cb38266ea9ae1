"""The agent process: settings and flags, wiring and lifetime.

Order of start: become the child subreaper and open libvirt (``LibvirtHypervisor`` does both
for ``qemu:///embed``), install the transfer's fast path if it passes its self-test
(:mod:`~vmresize.agent.transfer.fastpath_check`), load the keys, start the migration SSH
service, register the Host, then run kopf in-process with the agent's identity until
SIGTERM/SIGINT; on a clean stop the Host is marked not ready and everything started here
is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import kopf

from vmresize.agent import metrics
from vmresize.agent.errors import AgentError, HypervisorError, KubeError
from vmresize.agent.executor import Executor
from vmresize.agent.hypervisor.libvirt_adapter import LibvirtHypervisor
from vmresize.agent.kube import handlers
from vmresize.agent.kube.client import AgentKube
from vmresize.agent.kube.fence import OwnerFence
from vmresize.agent.kube.orphans import HostOrphans
from vmresize.agent.kube.registration import Registrar, Registration
from vmresize.agent.settings import AgentSettings
from vmresize.agent.transfer import fastpath_check, keys
from vmresize.agent.transfer.server import start_migration_server
from vmresize.agent.transfer.service import SshTransfer
from vmresize.api.envsettings import SettingsError
from vmresize.api.meta import Condition

log = logging.getLogger("vmresize.agent")
T = TypeVar("T")


def parse_args(argv: list[str] | None = None) -> AgentSettings:
    """The settings: ``VMRESIZE_*`` variables, overridden by the flag of the same field."""
    p = argparse.ArgumentParser(prog="vmresize-agent", description=__doc__)
    for name, info in AgentSettings.model_fields.items():
        help_text = f"{info.description} (${AgentSettings.env_name(name)})"
        if info.annotation is bool:
            p.add_argument(AgentSettings.flag(name), dest=name, action="store_const",
                           const=True, default=None, help=help_text)
        else:  # the string as typed: the model parses and validates it
            p.add_argument(AgentSettings.flag(name), dest=name, default=None, help=help_text)
    try:
        return AgentSettings.from_env(overrides=vars(p.parse_args(argv)))
    except SettingsError as e:
        p.error(str(e))


def published_endpoint(cfg: AgentSettings, bound_port: int) -> tuple[str, int]:
    """Where other agents reach our migration service: the advertised address and port
    when set (NAT, a proxy in between), else the bound ones."""
    return (cfg.migration_advertise_address or cfg.migration_address,
            cfg.migration_advertise_port or bound_port)


async def run_agent(cfg: AgentSettings, *, stop_flag: asyncio.Event | None = None,
                    ready_flag: asyncio.Event | None = None) -> None:
    """Run the agent until ``stop_flag`` is set or a termination signal arrives."""
    cfg.storage_root.mkdir(parents=True, exist_ok=True)
    root = cfg.storage_root.resolve()
    hv = await asyncio.to_thread(LibvirtHypervisor, cfg.libvirt_uri)
    metrics_server = metrics.serve(cfg.metrics_port, cfg.metrics_address)
    try:
        fast = await fastpath_check.enable(cfg.transfer_fast_path)
        metrics.fast_path(fast.active, fast.reason)
        host_key = keys.load_or_create_host_key(cfg.state_dir)
        client_key = keys.load_client_key(cfg.migration_key_file)
        server = await start_migration_server(
            root=root, host_key=host_key, authorized_keys=[keys.public_openssh(client_key)],
            host=cfg.migration_address, port=cfg.migration_port)
        try:
            if cfg.kubeconfig is not None:  # kopf's login reads the same file
                os.environ["KUBECONFIG"] = str(cfg.kubeconfig)
            kube = AgentKube.from_kubeconfig(cfg.kubeconfig)
            fenced = HostOrphans(kube, cfg.host_name)
            executor = Executor(host=cfg.host_name, hypervisor=hv, storage_root=root,
                                transfer=SshTransfer(server, client_key),
                                fence=OwnerFence(kube),
                                call_timeout=cfg.libvirt_call_timeout_seconds,
                                checksum_stall=cfg.checksum_stall_seconds,
                                probe_networks=cfg.probe_networks(),
                                orphaned=fenced.fenced)
            address, port = published_endpoint(cfg, server.port)
            registrar = Registrar(kube, hv, Registration(
                host=cfg.host_name, storage_root=root, address=address, port=port,
                host_key=keys.public_openssh(host_key),
                conditions=(fast_path_condition(fast),),
                bandwidth_mibps=cfg.migration_bandwidth_mibps or None))
            await _register(registrar)
            log.info("host %s registered; migration service on %s:%d", cfg.host_name,
                     cfg.migration_address, server.port)
            # Copies an admin abandoned here go before any task is taken, and keep going.
            await _reap_at_start(fenced, executor)
            heartbeat = asyncio.create_task(registrar.heartbeat_forever(cfg.heartbeat_seconds))
            reaper = asyncio.create_task(fenced.reap_forever(executor.reap_orphan,
                                                             cfg.heartbeat_seconds))
            runner = handlers.TaskRunner(host=cfg.host_name, executor=executor, kube=kube)
            settings = kopf.OperatorSettings()
            handlers.configure(settings)
            try:
                await kopf.operator(registry=handlers.build_registry(runner),
                                    settings=settings, standalone=True,
                                    namespaces=[cfg.namespace], stop_flag=stop_flag,
                                    ready_flag=ready_flag)
            finally:
                for t in (heartbeat, reaper):
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
                await registrar.mark_stopped()
        finally:
            await server.close()
            if cfg.stop_vms_on_exit:
                await asyncio.to_thread(_stop_vms, hv)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        hv.close()


def fast_path_condition(state: fastpath_check.FastPathState) -> Condition:
    """The Host's TransferFastPath condition: which packet path the transfer runs on."""
    return Condition(type="TransferFastPath", status="True" if state.active else "False",
                     reason=state.reason, message=state.message)


def _stop_vms(hv: LibvirtHypervisor) -> None:
    """Power off the domains that record a vmresize owner (:mod:`vmresize.agent.ownership`);
    the host's other domains are not ours to stop."""
    for name in hv.list_domains():
        try:
            if hv.owner(name) is None:
                log.info("left %s running: it records no vmresize owner", name)
                continue
            hv.destroy(name)
            log.info("stopped %s (--stop-vms-on-exit)", name)
        except HypervisorError as e:
            log.warning("could not stop %s: %s", name, e)


REGISTER_BACKOFF_MAX = 30.0


async def _reap_at_start(fenced: HostOrphans, executor: Executor) -> None:
    """Destroy the copies abandoned on this host before any task runs (a copy that may be
    fenced must not get a chance to start)."""
    n = await _retrying("reading abandoned copies",
                        lambda: fenced.reap_all(executor.reap_orphan))
    if n:
        log.warning("destroyed %d abandoned cop%s on this host", n, "y" if n == 1 else "ies")


async def _register(registrar: Registrar) -> None:
    """Register the Host."""
    await _retrying("registration", registrar.register)


async def _retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, retried with a doubling delay while the API server is unreachable or
    overloaded (a retryable KubeError); any other error is raised."""
    delay = 1.0
    while True:
        try:
            return await call()
        except KubeError as e:
            if not e.retryable:
                raise
            log.warning("%s failed (%s); retrying in %.0fs", what, e, delay)
            await asyncio.sleep(delay)
            delay = min(REGISTER_BACKOFF_MAX, delay * 2)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``vmresize-agent``: parse the settings and run the agent in the main thread
    (signals need it); exit 1 on a hypervisor, Kubernetes or transfer error."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("the agent must run in the main thread (signal handling)")
    try:
        asyncio.run(run_agent(cfg))
    except AgentError as e:
        log.error("agent stopped: %s", e)
        sys.exit(1)
