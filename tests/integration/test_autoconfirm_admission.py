"""``spec.autoConfirm`` on a real kube-apiserver: bad checks are refused at admission with a
message that names the problem; good ones are stored as written (``guestAgent: {}`` too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.support.kube import kubectl, kubectl_json

from vmresize.api.meta import API_VERSION


def resize(name: str = "r1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "VMResize",
            "metadata": {"name": name}, "spec": {"instanceName": "web-1", **spec}}


def _create(kubeconfig: Path, ns: str, obj: dict[str, Any]) -> tuple[int, str]:
    proc = kubectl(kubeconfig, "create", "-n", ns, "-f", "-", check=False,
                   stdin=json.dumps(obj))
    return proc.returncode, proc.stderr + proc.stdout


TCP = {"tcp": {"host": "10.0.0.5", "port": 22}}

#: (id, spec.autoConfirm, what the error must say)
INVALID: list[tuple[str, Any, str]] = [
    ("empty", {}, "autoConfirm needs afterSeconds, a check, or both"),
    ("two-probes", {"check": {**TCP, "guestAgent": {}}},
     "a check names exactly one of guestAgent, tcp, http"),
    ("no-probe", {"check": {}}, "a check names exactly one of guestAgent, tcp, http"),
    ("tcp-no-port", {"check": {"tcp": {"host": "10.0.0.5"}}},
     "spec.autoConfirm.check.tcp.port: Required value"),
    ("tcp-port-zero", {"check": {"tcp": {"host": "10.0.0.5", "port": 0}}},
     "spec.autoConfirm.check.tcp.port"),
    ("tcp-port-too-big", {"check": {"tcp": {"host": "10.0.0.5", "port": 65536}}},
     "spec.autoConfirm.check.tcp.port"),
    ("tcp-url-as-host", {"check": {"tcp": {"host": "http://10.0.0.5/", "port": 80}}},
     "spec.autoConfirm.check.tcp.host"),
    ("http-no-host", {"check": {"http": {"port": 80}}},
     "spec.autoConfirm.check.http.host: Required value"),
    ("http-relative-path", {"check": {"http": {"host": "a.example", "path": "healthz"}}},
     "spec.autoConfirm.check.http.path"),
    ("http-path-header-injection",
     {"check": {"http": {"host": "a.example", "path": "/x HTTP/1.1\r\nX-Evil: 1"}}},
     "spec.autoConfirm.check.http.path"),
    ("http-host-with-space", {"check": {"http": {"host": "a b"}}},
     "spec.autoConfirm.check.http.host"),
    ("window-zero", {"check": TCP, "windowSeconds": 0}, "spec.autoConfirm.windowSeconds"),
    ("window-over-a-day", {"check": TCP, "windowSeconds": 86401},
     "spec.autoConfirm.windowSeconds"),
    ("window-without-check", {"afterSeconds": 5, "windowSeconds": 60},
     "windowSeconds applies only to a check"),
    ("negative-after", {"afterSeconds": -1}, "spec.autoConfirm.afterSeconds"),
    ("period-zero", {"check": TCP, "periodSeconds": 0}, "spec.autoConfirm.periodSeconds"),
    ("unknown-probe", {"check": {"icmp": {"host": "10.0.0.5"}}},
     'unknown field "spec.autoConfirm.check.icmp"'),
]


@pytest.mark.parametrize(("case", "auto", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_bad_auto_confirm_is_refused(kubeconfig: Path, namespace: str, case: str, auto: Any,
                                     expected: str) -> None:
    code, err = _create(kubeconfig, namespace, resize(autoConfirm=auto))
    assert code != 0, f"{case} was accepted"
    assert expected in err, err


def test_auto_confirm_and_the_old_field_together_are_refused(kubeconfig: Path,
                                                             namespace: str) -> None:
    code, err = _create(kubeconfig, namespace,
                        resize(autoConfirmSeconds=30, autoConfirm={"afterSeconds": 30}))
    assert code != 0
    assert "set autoConfirm.afterSeconds or autoConfirmSeconds, not both" in err


@pytest.mark.parametrize("auto", [
    {"afterSeconds": 30},
    {"check": {"guestAgent": {}}},
    {"check": TCP, "afterSeconds": 10, "windowSeconds": 120, "periodSeconds": 5},
    {"check": {"http": {"host": "fd00::5", "port": 8080, "path": "/healthz?full=1"}}},
], ids=["timer", "guest-agent", "tcp", "http-ipv6"])
def test_good_auto_confirm_is_stored_as_written(kubeconfig: Path, namespace: str,
                                                auto: dict[str, Any]) -> None:
    code, err = _create(kubeconfig, namespace, resize(autoConfirm=auto))
    assert code == 0, err
    stored = kubectl_json(kubeconfig, "-n", namespace, "get", "vmresize", "r1")
    assert stored is not None
    got = stored["spec"]["autoConfirm"]
    assert {k: got[k] for k in auto} == auto
    assert got["periodSeconds"] == auto.get("periodSeconds", 2)   # the schema's default


def test_auto_confirm_is_immutable(kubeconfig: Path, namespace: str) -> None:
    code, err = _create(kubeconfig, namespace, resize(autoConfirm={"check": TCP}))
    assert code == 0, err
    for patch in ({"autoConfirm": {"check": {"tcp": {"host": "10.0.0.6", "port": 22}}}},
                  {"autoConfirm": None}):
        proc = kubectl(kubeconfig, "patch", "vmresize", "r1", "-n", namespace, "--type",
                       "merge", "-p", json.dumps({"spec": patch}), check=False)
        assert proc.returncode != 0, patch
        assert "autoConfirm is immutable" in proc.stderr
