"""The chart's Grafana dashboard loads and asks only for metrics that exist.

Every PromQL expression of every panel is reduced to its metric names (label matchers,
ranges, groupings, strings and dashboard variables removed; a name followed by ``(`` must
be a PromQL function or aggregation). Each name must be one that the operator's or the
agent's metrics module registers, with the suffixes Prometheus adds to its type:
``_total`` (counter), ``_bucket``/``_sum``/``_count`` (histogram).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from vmresize.agent import metrics as agent_metrics
from vmresize.operator import metrics as operator_metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/helm/vmresize/dashboards/vmresize.json"

FUNCTIONS = {
    "sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile", "rate", "irate",
    "increase", "delta", "histogram_quantile", "clamp_min", "clamp_max", "abs", "label_replace",
    "sum_over_time", "avg_over_time", "max_over_time", "vector", "scalar",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count", "")}


def registered() -> set[str]:
    """Every series name the two metrics modules can expose."""
    names: set[str] = set()
    for module in (operator_metrics, agent_metrics):
        for obj in vars(module).values():
            if isinstance(obj, MetricWrapperBase) and not obj._labelvalues:
                (family,) = obj.describe()
                names.update(family.name + s for s in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (see the module docstring)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)           # strings (label values)
    text = re.sub(r"\{[^}]*\}", "", text)                    # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                   # ranges
    text = re.sub(r"\$\{?\w+\}?", "", text)                  # dashboard variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        if text[m.end():].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        elif word.lower() not in KEYWORDS:
            names.add(word)
    return names


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def test_dashboard_loads_with_panels_and_targets(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "vmresize"
    assert dashboard["uid"]
    graphs = [p for p in panels(dashboard) if p["type"] != "row"]
    assert len(graphs) >= 10
    for p in graphs:
        assert p["title"], p
        assert p["targets"], f"panel {p['title']!r} has no target"
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys()
        assert p["datasource"]["uid"] == "${datasource}"
    ids = [t["refId"] for p in graphs for t in p["targets"]]
    assert len(ids) >= len(graphs)


def test_dashboard_uses_only_metrics_that_exist(dashboard: dict[str, Any]) -> None:
    known = registered()
    used: set[str] = set()
    for p in panels(dashboard):
        for t in p.get("targets", []):
            names = metric_names(t["expr"])
            assert names, f"no metric in {t['expr']!r}"
            missing = names - known
            assert not missing, f"panel {p['title']!r} uses unknown metrics {missing}"
            used |= names
    # Every family of both modules is on the dashboard somewhere.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in known}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"


def test_the_name_parser_catches_a_typo() -> None:
    known = registered()
    assert metric_names('sum by (phase) (rate(vmresize_resize_phase_transitions_total'
                        '{phase="Migrating"}[$__rate_interval]))') == {
        "vmresize_resize_phase_transitions_total"}
    assert "vmresize_agent_transfer_bytes_total" in known
    assert "vmresize_agent_step_duration_seconds_bucket" in known
    assert "vmresize_host_claimed" in known
    assert not metric_names("vmresize_agent_transfer_byte_total") <= known
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        metric_names("rat(vmresize_agent_transfer_bytes_total[5m])")
