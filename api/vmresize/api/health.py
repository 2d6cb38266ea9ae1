"""Health-gated auto-confirm: the check a VMResize may name, and how long it may take.

``spec.autoConfirm`` on a VMResize says when the operator confirms on its own. Without a
``check`` it is the fixed timer (``afterSeconds``; the older ``spec.autoConfirmSeconds``
is the same thing). With a ``check``, the destination agent probes the VM once it runs in
VerifyResize (a ``HealthCheck`` HostTask) and the operator confirms when a probe passes,
or reverts on its own when the check fails or ``windowSeconds`` pass without a success.

Where a probe goes: ``guestAgent`` asks libvirt for the QEMU guest agent's ``guest-ping``
(the domain must have the ``org.qemu.guest_agent.0`` channel); ``tcp`` and ``http`` reach
the address the check names, from the destination host's network. vmresize does not guess
a guest's address (libvirt's lease and agent sources are empty on most setups, and a user
network NAT hides the guest): the user names the address the guest answers on, as a
Kubernetes probe names its port.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field

from vmresize.api.meta import Model

#: An IPv4 or IPv6 address or a DNS name (no scheme, no port, no path): it goes to
#: ``getaddrinfo`` and into the HTTP ``Host`` header, never to a shell.
PROBE_HOST = r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$"
#: An absolute path of printable ASCII without spaces: it cannot break the request line.
PROBE_PATH = r"^/[!-~]*$"
MAX_WINDOW = 24 * 3600
"""A check that has not passed within a day will not: revert (the source VM is off)."""


class GuestAgentCheck(Model):
    """Pass when the QEMU guest agent in the VM answers ``guest-ping`` through libvirt.
    Fails at once, with the reason, if the domain has no guest agent channel."""


class TcpCheck(Model):
    """Pass when a TCP connection to ``host:port`` opens."""

    host: str = Field(min_length=1, max_length=253, pattern=PROBE_HOST)
    """Address the guest answers on, as the destination host reaches it."""
    port: int = Field(ge=1, le=65535)
    """TCP port."""


class HttpCheck(Model):
    """Pass when ``GET http://host:port/path`` answers 2xx."""

    host: str = Field(min_length=1, max_length=253, pattern=PROBE_HOST)
    """Address the guest answers on, as the destination host reaches it."""
    port: int = Field(default=80, ge=1, le=65535)
    """TCP port."""
    path: str = Field(default="/", max_length=1024, pattern=PROBE_PATH)
    """Absolute path, query included."""


class HealthCheck(Model):
    """Exactly one probe."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "(has(self.guestAgent) ? 1 : 0) + (has(self.tcp) ? 1 : 0) "
                "+ (has(self.http) ? 1 : 0) == 1",
        "message": "a check names exactly one of guestAgent, tcp, http"}]})

    guest_agent: GuestAgentCheck | None = None
    """The QEMU guest agent answers ``guest-ping``."""
    tcp: TcpCheck | None = None
    """A TCP port opens."""
    http: HttpCheck | None = None
    """An HTTP GET answers 2xx."""

    def describe(self) -> str:
        """The check in a few words, for messages: ``tcp 10.0.0.5:22``."""
        if self.tcp is not None:
            return f"tcp {self.tcp.host}:{self.tcp.port}"
        if self.http is not None:
            return f"http://{self.http.host}:{self.http.port}{self.http.path}"
        return "guest agent"


class AutoConfirm(Model):
    """When the operator confirms (or, with a check, reverts) without the user."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "has(self.check) || has(self.afterSeconds)",
        "message": "autoConfirm needs afterSeconds, a check, or both"}, {
        "rule": "has(self.check) || !has(self.windowSeconds)",
        "message": "windowSeconds applies only to a check"}]})
    default_window: ClassVar[int] = 300

    after_seconds: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)
    """Without a check: confirm this long after VerifyResize is reached (0: never, as
    ``autoConfirmSeconds``). With a check: the first probe waits this long (default 0)."""
    check: HealthCheck | None = None
    """The probe that must pass before the operator confirms; failing, it reverts."""
    window_seconds: int | None = Field(default=None, ge=1, le=MAX_WINDOW)
    """With a check: how long, from the first probe, the check may take to pass before the
    resize is reverted. Default 300."""
    period_seconds: int = Field(default=2, ge=1, le=300)
    """With a check: the pause between two probes."""

    def window(self) -> int:
        """``windowSeconds`` or its default."""
        return self.window_seconds or self.default_window


__all__ = ["AutoConfirm", "GuestAgentCheck", "HealthCheck", "HttpCheck", "TcpCheck"]
