"""Agent settings: every knob, its environment variable, its command-line flag, its bounds.

Each field is read from its ``VMRESIZE_*`` variable; the flag named after the field
(``host_name`` -> ``--host-name``) overrides it. Defaults and validation are the model's
alone: flags are handed over as the strings typed. Parsing rules are those of
:mod:`vmresize.api.envsettings`; the reference (docs/settings.md) and the chart's schema
for these keys are generated from this model (``hack/settingsgen.py``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from vmresize.api import naming
from vmresize.api.envsettings import EnvSettings


class AgentSettings(EnvSettings):
    """Everything the agent is told at start."""

    flag_names: ClassVar[bool] = True

    host_name: str = Field(
        min_length=1, validation_alias="VMRESIZE_HOST_NAME",
        description="This hypervisor's name: its Host object and the HostTasks it runs "
                    "(the chart sets the node name).")
    libvirt_uri: str = Field(
        "qemu:///system", pattern=r"^[a-z0-9+]+://", validation_alias="VMRESIZE_LIBVIRT_URI",
        description="libvirt connection URI (qemu:///embed?root=DIR for an embedded QEMU, "
                    "test:///default in tests).")
    storage_root: Path = Field(
        Path("/var/lib/vmresize"), validation_alias="VMRESIZE_STORAGE_ROOT",
        description="Directory holding instance disks and images; every disk path is "
                    "confined below it.")
    state_dir: Path = Field(
        Path("/var/lib/vmresize-agent"), validation_alias="VMRESIZE_STATE_DIR",
        description="Directory of the agent's own state (its SSH host key, generated on "
                    "first start); it must survive restarts.")
    migration_address: str = Field(
        min_length=1, validation_alias="VMRESIZE_MIGRATION_ADDRESS",
        description="Address the migration SSH service binds and publishes in the Host's "
                    "status (the chart sets the pod IP, the node's with hostNetwork).")
    migration_port: int = Field(
        naming.MIGRATION_PORT, ge=1, le=65535, validation_alias="VMRESIZE_MIGRATION_PORT",
        description="TCP port of the migration SSH service.")
    migration_advertise_address: str | None = Field(
        None, min_length=1, max_length=253,
        validation_alias="VMRESIZE_MIGRATION_ADVERTISE_ADDRESS",
        description="Address other agents are told to reach the migration service at, "
                    "when it differs from the bound one (NAT, a proxy); unset: the bound "
                    "address. The pinned host key is the service's own either way.")
    migration_advertise_port: int | None = Field(
        None, ge=1, le=65535, validation_alias="VMRESIZE_MIGRATION_ADVERTISE_PORT",
        description="Port published with the advertised address; unset: the bound port.")
    migration_key_file: Path = Field(
        validation_alias="VMRESIZE_MIGRATION_KEY_FILE",
        description="Private key shared by all agents to authenticate to each other's "
                    "migration service (mounted from a Secret).")
    namespace: str = Field(
        naming.DEFAULT_NAMESPACE, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        validation_alias="VMRESIZE_NAMESPACE",
        description="Namespace of the HostTasks (the operator's VMRESIZE_NAMESPACE).")
    kubeconfig: Path | None = Field(
        None, validation_alias="VMRESIZE_KUBECONFIG",
        description="kubeconfig file; unset, the in-cluster ServiceAccount is used, else "
                    "$KUBECONFIG or ~/.kube/config.")
    heartbeat_seconds: float = Field(
        10.0, ge=1,  # each beat is a status write: sub-second beats only load the API server
        validation_alias="VMRESIZE_HEARTBEAT_SECONDS",
        description="Seconds between heartbeats in the Host's status; keep it well below "
                    "the operator's VMRESIZE_HEARTBEAT_STALE_SECONDS.")
    metrics_port: int = Field(
        8091, ge=0, le=65535,  # next to the operator's 8090
        validation_alias="VMRESIZE_METRICS_PORT",
        description="Port of the agent's Prometheus /metrics endpoint; 0 serves none.")
    metrics_address: str = Field(
        "0.0.0.0", min_length=1, validation_alias="VMRESIZE_METRICS_ADDRESS",  # noqa: S104
        description="Address the metrics endpoint binds (all addresses: with hostNetwork, "
                    "every address of the node).")
    health_probe_networks: str = Field(
        "", max_length=4096, validation_alias="VMRESIZE_HEALTH_PROBE_NETWORKS",
        description="Comma-separated networks (CIDR) that a resize's TCP or HTTP health "
                    "check may probe from this host, e.g. the guests' networks; empty, "
                    "such checks are refused (a tenant could otherwise make the agent "
                    "reach any address its host can).")
    transfer_fast_path: bool = Field(
        True, validation_alias="VMRESIZE_TRANSFER_FAST_PATH",
        description="Use the transfer's fast path (fewer copies in asyncssh's AES-GCM "
                    "packet path) when it passes its self-test at startup against "
                    "asyncssh's own path on the installed versions; false: asyncssh's own "
                    "path always. The Host's TransferFastPath condition says which runs.")
    libvirt_call_timeout_seconds: float = Field(
        120.0, ge=1,  # a state read answers in milliseconds; a live commit is given 80 %
        validation_alias="VMRESIZE_LIBVIRT_CALL_TIMEOUT_SECONDS",
        description="Deadline of one libvirt call made by a step (a definition read, a "
                    "power-off request, a live commit, ...); a call that does not answer "
                    "by then fails the step, retryable, with the call's name, instead of "
                    "holding it (and a VM that is off) while the heartbeat goes on.")
    checksum_stall_seconds: float = Field(
        120.0, ge=1,  # a healthy disk hands over its next 4 MiB within seconds
        validation_alias="VMRESIZE_CHECKSUM_STALL_SECONDS",
        description="A disk checksum (verifying a copy) that reads nothing for this long "
                    "fails the step, retryable: the disk is failing or hung. The bound is "
                    "on progress, so a large healthy disk takes as long as it needs.")
    migration_bandwidth_mibps: int = Field(
        0, ge=0, le=1_000_000, validation_alias="VMRESIZE_MIGRATION_BANDWIDTH_MIBPS",
        description="The spec.migrationBandwidthMiBps (MiB/s of migration traffic this "
                    "host sends, shared by all its transfers) written into the Host when "
                    "this agent creates it; 0: unlimited. Only a new Host gets it: an "
                    "existing Host's spec is the admin's.")
    stop_vms_on_exit: bool = Field(
        False, validation_alias="VMRESIZE_STOP_VMS_ON_EXIT",
        description="On a clean stop, power off every domain that records a vmresize "
                    "owner (demos and tests only: by default VMs outlive the agent and a "
                    "restarted agent adopts them).")

    @field_validator("health_probe_networks")
    @classmethod
    def _networks(cls, v: str) -> str:
        probe_networks(v)
        return v

    def probe_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The networks health probes may reach."""
        return probe_networks(self.health_probe_networks)


def probe_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``"10.0.0.0/8, fd00::/8"`` as networks; ValueError names a bad entry."""
    out = []
    for item in (i.strip() for i in text.split(",")):
        if item:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError as e:
                raise ValueError(f"not a network (CIDR): {item!r}") from e
    return out
