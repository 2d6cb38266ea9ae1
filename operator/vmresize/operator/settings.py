"""Operator settings: every knob, its environment variable and its documented default.

Read once at start-up (:func:`Settings.from_env`) and passed down; nothing else in the
operator reads the environment.

==============================================  =========================  =========
variable                                        meaning                    default
==============================================  =========================  =========
``VMRESIZE_NAMESPACE``                          where HostTasks live       ``vmresize-system``
``VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST``          Nova's option of that name ``false``
``VMRESIZE_AUTO_CONFIRM_SECONDS``               cluster auto-confirm; 0 off ``0``
``VMRESIZE_MAX_ATTEMPTS``                       destinations tried (Nova)  ``3``
``VMRESIZE_TASK_RETRIES``                       tries of confirm/revert    ``5``
``VMRESIZE_HEARTBEAT_STALE_SECONDS``            agent considered down      ``60``
``VMRESIZE_RAM_WEIGHT_MULTIPLIER``              free RAM weigher           ``1.0``
``VMRESIZE_CPU_WEIGHT_MULTIPLIER``              free vCPU weigher          ``0.0``
``VMRESIZE_DISK_WEIGHT_MULTIPLIER``             free disk weigher          ``0.0``
``VMRESIZE_POLL_SECONDS``                       re-check without events    ``5``
``VMRESIZE_POWER_OFF_TIMEOUT_SECONDS``          graceful power-off, then   ``60``
                                                forced (Nova's
                                                shutdown_timeout)
``VMRESIZE_METRICS_PORT``                       Prometheus port; 0 off     ``8090``
``VMRESIZE_PEERING_LIFETIME_SECONDS``           HA: a silent peer is dead  ``60``
==============================================  =========================  =========

Nova's defaults: ``allow_resize_to_same_host=False``, ``resize_confirm_window=0``,
``scheduler.max_attempts=3``, ``ram_weight_multiplier=1.0`` (the others 0 here so that
free RAM decides, as in Nova's default weigher set), ``service_down_time=60``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from vmresize.api.naming import DEFAULT_NAMESPACE

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the operator."""

    namespace: str = DEFAULT_NAMESPACE
    allow_resize_to_same_host: bool = False
    auto_confirm_seconds: int = 0
    max_attempts: int = 3
    task_retries: int = 5
    heartbeat_stale_seconds: float = 60.0
    ram_weight_multiplier: float = 1.0
    cpu_weight_multiplier: float = 0.0
    disk_weight_multiplier: float = 0.0
    poll_seconds: float = 5.0
    power_off_timeout_seconds: int = 60
    metrics_port: int = 8090
    peering_lifetime_seconds: int = 60   # kopf's default peering lifetime

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default ``os.environ``); unset variables keep defaults."""
        e = os.environ if env is None else env
        d = cls()

        def get(name: str, default: str) -> str:
            return e.get(f"VMRESIZE_{name}", default).strip()

        return cls(
            namespace=get("NAMESPACE", d.namespace) or d.namespace,
            allow_resize_to_same_host=get(
                "ALLOW_RESIZE_TO_SAME_HOST", str(d.allow_resize_to_same_host)).lower() in _TRUE,
            auto_confirm_seconds=int(get("AUTO_CONFIRM_SECONDS", str(d.auto_confirm_seconds))),
            max_attempts=max(1, int(get("MAX_ATTEMPTS", str(d.max_attempts)))),
            task_retries=max(1, int(get("TASK_RETRIES", str(d.task_retries)))),
            heartbeat_stale_seconds=float(
                get("HEARTBEAT_STALE_SECONDS", str(d.heartbeat_stale_seconds))),
            ram_weight_multiplier=float(get("RAM_WEIGHT_MULTIPLIER", str(d.ram_weight_multiplier))),
            cpu_weight_multiplier=float(get("CPU_WEIGHT_MULTIPLIER", str(d.cpu_weight_multiplier))),
            disk_weight_multiplier=float(
                get("DISK_WEIGHT_MULTIPLIER", str(d.disk_weight_multiplier))),
            poll_seconds=max(0.1, float(get("POLL_SECONDS", str(d.poll_seconds)))),
            power_off_timeout_seconds=min(3600, max(0, int(get(
                "POWER_OFF_TIMEOUT_SECONDS", str(d.power_off_timeout_seconds))))),
            metrics_port=int(get("METRICS_PORT", str(d.metrics_port))),
            peering_lifetime_seconds=max(
                2, int(get("PEERING_LIFETIME_SECONDS", str(d.peering_lifetime_seconds)))),
        )
