"""Fixtures: a World of test Hosts/Flavors, the fake agents, and the real operator process.

Flavors and Hosts are cluster-scoped, so every name carries the test namespace, each
flavor selects only its test's hosts (``aggregate_instance_extra_specs:`` label), and all
of them are deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.support.op_harness import Fulfiller, Operator, World


@pytest.fixture
def world(api_client: client.ApiClient, namespace: str) -> Iterator[World]:
    w = World(api_client, namespace)
    w.make_flavors()
    try:
        yield w
    finally:
        w.cleanup()


@pytest.fixture
def agents(api_client: client.ApiClient, world: World) -> Iterator[Fulfiller]:
    with Fulfiller(api_client, world.ns, world.hosts) as f:
        yield f


@pytest.fixture
def operator_factory(kubeconfig: Path, namespace: str,
                     tmp_path: Path) -> Iterator[Any]:
    started: list[Operator] = []

    def make(argv: list[str] | None = None, log: str = "operator.log", **env: str) -> Operator:
        op = Operator(kubeconfig, namespace, tmp_path / log, argv, **env).start()
        started.append(op)
        return op

    yield make
    for op in started:
        op.stop()


@pytest.fixture
def operator(operator_factory: Any) -> Operator:
    op: Operator = operator_factory()
    return op
