"""Helpers the tests share: process harnesses, kubectl, the one polling loop, the chart.

Fixtures stay in the ``conftest.py`` files; what they and the tests call lives here, and
is imported as ``from tests.support.X import ...`` (the repo root is on pytest's
``pythonpath``). The local control plane is ``hack.localcluster`` (the demo runs it too).
"""

from pathlib import Path

#: The repository root (tests/support/ is two levels below it).
REPO = Path(__file__).resolve().parents[2]
