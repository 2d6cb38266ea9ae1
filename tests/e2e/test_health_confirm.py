"""Health-gated auto-confirm on the whole stack: the real operator, three real agents,
real QEMU guests (embedded libvirt), the real API server.

What the probes really reach, honestly: the guests here boot no network service (a blank
seeded disk, user-mode NIC), so the passing HTTP probe goes to a real HTTP server this test
starts on 127.0.0.9, named explicitly in the check, as a user names the address a guest
answers on. The server records each request, so the test sees that the destination agent
(and no other) really sent it while the VM ran there. The failing probe is a guest agent
check on a domain without the guest agent channel: the destination agent asks libvirt for
that VM's definition and fails the check with that reason; the operator reverts on its own.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.support.full_stack_harness import (
    BAD_END,
    FLAVORS,
    Stack,
    qemu_args,
    qemu_pid,
    qemu_vcpus_mib,
)
from tests.support.kube import kubectl_json

from vmresize.agent.hypervisor import embedded
from vmresize.api.meta import API_VERSION

SMALL, BIG = FLAVORS["small"], FLAVORS["big"]
PROBE_ADDRESS = "127.0.0.9"


@pytest.fixture(scope="module")
def stack(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    embedded.become_subreaper()  # QEMU outlives a stopped agent and comes to us
    embedded.start_reaper(only="qemu-system")
    s = Stack(kubeconfig, tmp_path_factory.mktemp("health-confirm"))
    try:
        yield s.start()
    finally:
        s.close()


class Health(BaseHTTPRequestHandler):
    """200 on /healthz; records (path, User-Agent, when) of every request."""

    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("User-Agent", "")))
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("H", (Health,), {"seen": seen})
    server = ThreadingHTTPServer((PROBE_ADDRESS, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def resize(s: Stack, name: str, instance: str, auto: dict[str, Any]) -> None:
    s.apply({"apiVersion": API_VERSION, "kind": "VMResize",
             "metadata": {"name": name, "namespace": s.ns},
             "spec": {"instanceName": instance, "flavor": s.flavor("big"),
                      "autoConfirm": auto}})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in st.get("conditions", []) if c["type"] == kind)


def events(s: Stack, name: str) -> list[tuple[str, str, str]]:
    doc = kubectl_json(s.kubeconfig, "-n", s.ns, "get", "events", "--field-selector",
                       f"involvedObject.name={name}") or {}
    return [(e["type"], e["reason"], e.get("message", "")) for e in doc.get("items", [])]


def health_tasks(s: Stack, uid: str) -> list[dict[str, Any]]:
    doc = kubectl_json(s.kubeconfig, "-n", s.ns, "get", "hosttasks.vmresize.io", "-l",
                       f"vmresize.io/owner-uid={uid}") or {}
    return [t for t in doc.get("items", []) if t["spec"]["action"] == "HealthCheck"]


def running_flavor(s: Stack, host: str, domain: str) -> tuple[int, int]:
    argv = qemu_args(s.agents[host], domain)
    assert argv is not None, f"no QEMU runs {domain} on {host}\n{s.diagnostics()}"
    return qemu_vcpus_mib(argv)


def test_a_passing_http_probe_confirms(stack: Stack,
                                       health_server: tuple[int, list[tuple[str, str]]]
                                       ) -> None:
    s, (port, seen) = stack, health_server
    inst = s.create_instance("vm-healthy", "small", "e2e: health check passes")
    resize(s, "grow-healthy", "vm-healthy", {
        "windowSeconds": 120,
        "check": {"http": {"host": PROBE_ADDRESS, "port": port, "path": "/healthz"}}})
    st = s.wait_status("vmresizes", "grow-healthy", "Confirmed", bad=(*BAD_END, "Reverted"))
    dst = st["destHost"]
    assert dst != inst["host"]
    # Confirmed on the probe's evidence, not by a user and not by a timer.
    healthy = condition(st, "Healthy")
    assert (healthy["status"], healthy["reason"]) == ("True", "HealthCheckPassed")
    assert f"http://{PROBE_ADDRESS}:{port}/healthz answered 200" in healthy["message"]
    assert ("/healthz", "vmresize-agent") in seen
    r = s.get("vmresizes", "grow-healthy")
    assert "confirm" not in r["spec"] or r["spec"]["confirm"] is False
    (task,) = health_tasks(s, r["metadata"]["uid"])
    assert task["spec"]["host"] == dst, "the destination agent runs the check"
    assert task["status"]["phase"] == "Succeeded"
    assert task["status"]["result"]["probes"] >= 1
    # The VM runs on the destination with the new flavor; the source copy is gone.
    assert running_flavor(s, dst, st["destDomainName"]) == BIG[:2]
    assert qemu_pid(s.agents[inst["host"]], inst["domainName"]) is None
    now = s.status("instances", "vm-healthy")
    assert (now["phase"], now["host"], now["flavor"]) == ("Active", dst, s.flavor("big"))
    assert any(r == "HealthCheckPassed" for _, r, _ in events(s, "grow-healthy"))


def test_a_failing_probe_reverts_with_the_reason(stack: Stack) -> None:
    s = stack
    inst = s.create_instance("vm-sick", "small", "e2e: health check fails")
    resize(s, "grow-sick", "vm-sick", {"check": {"guestAgent": {}}, "windowSeconds": 120})
    st = s.wait_status("vmresizes", "grow-sick", "Reverted", bad=(*BAD_END, "Confirmed"))
    # Reverted on its own, and it says why.
    assert st["reason"] == "HealthCheckFailed"
    assert "health check did not pass" in st["message"]
    healthy = condition(st, "Healthy")
    assert (healthy["status"], healthy["reason"]) == ("False", "HealthCheckFailed")
    assert "no guest agent channel" in healthy["message"]
    r = s.get("vmresizes", "grow-sick")
    assert not r["spec"].get("revert"), "nobody asked for the revert"
    (task,) = health_tasks(s, r["metadata"]["uid"])
    assert task["spec"]["host"] == st["destHost"]
    assert task["status"]["phase"] == "Failed"
    assert "org.qemu.guest_agent.0" in task["status"]["message"]
    warnings = [(t, m) for t, r_, m in events(s, "grow-sick") if r_ == "HealthCheckFailed"]
    assert {t for t, _ in warnings} == {"Warning"}
    assert any("no guest agent channel" in m for _, m in warnings), warnings
    # Back on the source, unchanged; the destination copy is gone.
    assert running_flavor(s, inst["host"], inst["domainName"]) == SMALL[:2]
    assert qemu_pid(s.agents[st["destHost"]], st["destDomainName"]) is None
    now = s.status("instances", "vm-sick")
    assert (now["phase"], now["host"], now["flavor"]) == ("Active", inst["host"],
                                                          s.flavor("small"))


def test_a_probe_that_never_passes_reverts_when_the_window_ends(stack: Stack) -> None:
    s = stack
    with socket.socket() as sock:   # a port nothing listens on: bound, then released
        sock.bind((PROBE_ADDRESS, 0))
        closed = sock.getsockname()[1]
    inst = s.create_instance("vm-closed", "small", "e2e: port never opens")
    resize(s, "grow-closed", "vm-closed", {
        "check": {"tcp": {"host": PROBE_ADDRESS, "port": closed}}, "windowSeconds": 4,
        "periodSeconds": 1})
    st = s.wait_status("vmresizes", "grow-closed", "Reverted", bad=(*BAD_END, "Confirmed"))
    assert st["reason"] == "HealthCheckFailed"
    healthy = condition(st, "Healthy")
    assert healthy["status"] == "False"
    assert "no probe passed by the deadline" in healthy["message"]
    assert f"tcp {PROBE_ADDRESS}:{closed}: connection refused" in healthy["message"]
    r = s.get("vmresizes", "grow-closed")
    (task,) = health_tasks(s, r["metadata"]["uid"])
    assert task["status"]["phase"] == "Failed"
    assert task["status"]["retryable"] is False
    assert running_flavor(s, inst["host"], inst["domainName"]) == SMALL[:2]
    now = s.status("instances", "vm-closed")
    assert (now["phase"], now["host"]) == ("Active", inst["host"])
