"""Operator settings: every knob, its environment variable, its bounds and its default.

Read once at start-up (:meth:`Settings.from_env`) and passed down; nothing else in the
operator reads the environment. The reference (docs/settings.md) and the chart's schema for
these keys are generated from this model (``hack/settingsgen.py``); parsing rules are those
of :mod:`vmresize.api.envsettings`.

Nova's defaults: ``allow_resize_to_same_host=False``, ``resize_confirm_window=0``,
``scheduler.max_attempts=3``, ``ram_weight_multiplier=1.0`` (the others 0 here so that
free RAM decides, as in Nova's default weigher set), ``service_down_time=60``,
``shutdown_timeout=60``.
"""

from __future__ import annotations

from pydantic import Field

from vmresize.api.envsettings import EnvSettings
from vmresize.api.naming import DEFAULT_NAMESPACE

#: A Kubernetes namespace name (DNS-1123 label).
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Settings(EnvSettings):
    """Everything configurable about the operator."""

    namespace: str = Field(
        DEFAULT_NAMESPACE, max_length=63, pattern=NAMESPACE_PATTERN,
        validation_alias="VMRESIZE_NAMESPACE",
        description="Namespace where the operator keeps HostTasks.")
    allow_resize_to_same_host: bool = Field(
        False, validation_alias="VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST",
        description="Let the scheduler pick the instance's current host, like Nova's "
                    "allow_resize_to_same_host.")
    auto_confirm_seconds: int = Field(
        0, ge=0, le=30 * 24 * 3600,  # the bound of VMResize spec.autoConfirmSeconds
        validation_alias="VMRESIZE_AUTO_CONFIRM_SECONDS",
        description="Confirm a resize automatically this many seconds after it reaches "
                    "VerifyResize; 0 never (Nova's resize_confirm_window). A VMResize's "
                    "spec.autoConfirmSeconds wins.")
    max_attempts: int = Field(
        3, ge=1, validation_alias="VMRESIZE_MAX_ATTEMPTS",
        description="How many hosts (the chosen one and its alternates) a resize tries "
                    "before it fails, like Nova's scheduler max_attempts.")
    task_retries: int = Field(
        5, ge=1, validation_alias="VMRESIZE_TASK_RETRIES",
        description="How often a failed confirm/revert step is tried before the resize "
                    "stops with both copies kept.")
    heartbeat_stale_seconds: float = Field(
        60.0, ge=1, validation_alias="VMRESIZE_HEARTBEAT_STALE_SECONDS",
        description="A host whose agent heartbeat the operator has not seen change for "
                    "this many seconds (on the operator's own clock, whatever the agent's "
                    "says) is filtered out by the scheduler and shown Ready=Unknown "
                    "(Nova's service_down_time). After an operator start every host gets "
                    "this long to show a heartbeat.")
    step_stale_seconds: float = Field(
        60.0, ge=10, le=24 * 3600,  # agents beat every 5 s (Hosts every 10 s): several beats
        validation_alias="VMRESIZE_STEP_STALE_SECONDS",
        description="Step watchdog: a resize step whose agent (or, for the disk copy, the "
                    "destination's agent) has written no heartbeat the operator saw for this "
                    "many seconds counts as stalled. Preparing, Migrating and Finishing then "
                    "fail and retry elsewhere or roll back; later steps report it and wait.")
    ram_weight_multiplier: float = Field(
        1.0, allow_inf_nan=False, validation_alias="VMRESIZE_RAM_WEIGHT_MULTIPLIER",
        description="Free-RAM weigher multiplier, like Nova's ram_weight_multiplier: "
                    "positive spreads instances over hosts, negative stacks them.")
    cpu_weight_multiplier: float = Field(
        0.0, allow_inf_nan=False, validation_alias="VMRESIZE_CPU_WEIGHT_MULTIPLIER",
        description="Free-vCPU weigher multiplier, like Nova's cpu_weight_multiplier.")
    disk_weight_multiplier: float = Field(
        0.0, allow_inf_nan=False, validation_alias="VMRESIZE_DISK_WEIGHT_MULTIPLIER",
        description="Free-disk weigher multiplier, like Nova's disk_weight_multiplier.")
    poll_seconds: float = Field(
        5.0, ge=0.1,  # below this the retries only burn CPU and API requests
        validation_alias="VMRESIZE_POLL_SECONDS",
        description="Retry delay of a failed step, in units of four: a step that failed "
                    "unexpectedly is tried again after 4x this. In-flight resizes are not "
                    "polled: events and deadlines wake them.")
    power_off_timeout_seconds: int = Field(
        60, ge=0, le=3600,  # the bound of HostTask spec.powerOffTimeoutSeconds
        validation_alias="VMRESIZE_POWER_OFF_TIMEOUT_SECONDS",
        description="Seconds a guest gets to shut down on ACPI power-off before it is "
                    "forced off (Nova's shutdown_timeout); 0 forces at once.")
    metrics_port: int = Field(
        8090, ge=0, le=65535, validation_alias="VMRESIZE_METRICS_PORT",
        description="Port of the Prometheus /metrics endpoint; 0 serves none.")
    metrics_address: str = Field(
        "0.0.0.0", min_length=1, validation_alias="VMRESIZE_METRICS_ADDRESS",  # noqa: S104
        description="Address the metrics endpoint binds (all addresses: a pod's port).")
    peering_lifetime_seconds: int = Field(
        60, ge=2,  # kopf touches its peering object at most every lifetime-1 s, at least 1 s
        validation_alias="VMRESIZE_PEERING_LIFETIME_SECONDS",
        description="With several replicas (kopf peering): seconds after which a silent "
                    "peer counts as gone and another replica takes over.")
