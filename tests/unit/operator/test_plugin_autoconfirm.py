"""``kubectl vmresize start``'s auto-confirm options become ``spec.autoConfirm`` (pure), and
a revert the health check decided is not a success."""

from __future__ import annotations

from typing import Any

import pytest

from vmresize.api.health import AutoConfirm
from vmresize.api.resize import ResizePhase
from vmresize.operator.cli.autoconfirm import auto_confirm
from vmresize.operator.cli.exitcodes import Exit, for_phase
from vmresize.operator.cli.main import parser


def spec_of(*argv: str) -> dict[str, Any] | None:
    return auto_confirm(parser().parse_args(["start", "web", "--flavor", "big", *argv]))


@pytest.mark.parametrize(("argv", "expected"), [
    ((), None),
    (("--auto-confirm-after", "600"), {"afterSeconds": 600}),
    (("--health-tcp", "10.0.0.5:22"), {"check": {"tcp": {"host": "10.0.0.5", "port": 22}}}),
    (("--health-tcp", "[fd00::5]:22"), {"check": {"tcp": {"host": "fd00::5", "port": 22}}}),
    (("--health-http", "http://web.internal/healthz?full=1", "--health-window", "120"),
     {"check": {"http": {"host": "web.internal", "port": 80, "path": "/healthz?full=1"}},
      "windowSeconds": 120}),
    (("--health-http", "http://10.0.0.5:8080"),
     {"check": {"http": {"host": "10.0.0.5", "port": 8080, "path": "/"}}}),
    (("--health-guest-agent", "--auto-confirm-after", "10"),
     {"check": {"guestAgent": {}}, "afterSeconds": 10}),
])
def test_options_make_the_spec(argv: tuple[str, ...], expected: dict[str, Any] | None) -> None:
    got = spec_of(*argv)
    assert got == expected
    if got is not None:
        AutoConfirm.model_validate(got)   # what the API server would store


@pytest.mark.parametrize("argv", [
    ("--health-tcp", "10.0.0.5"),
    ("--health-tcp", "10.0.0.5:ssh"),
    ("--health-http", "https://10.0.0.5/"),
    ("--health-http", "10.0.0.5:80/healthz"),
    ("--health-tcp", "10.0.0.5:22", "--health-guest-agent"),
])
def test_bad_options_are_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as e:
        spec_of(*argv)
    assert e.value.code == 2


def test_a_revert_by_the_health_check_is_not_success() -> None:
    assert for_phase(ResizePhase.REVERTED, "HealthCheckFailed") is Exit.FAILED
    assert for_phase(ResizePhase.REVERTED, "HealthCheckTimedOut") is Exit.FAILED
    assert for_phase(ResizePhase.REVERTED, "Reverted") is Exit.OK
    assert for_phase(ResizePhase.CONFIRMED, "HealthCheckPassed") is Exit.OK
