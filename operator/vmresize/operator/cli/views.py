"""Pure helpers of the plugin: API bodies to models, and numbers to short human text.

Bodies are parsed with the API models, but leniently: a field the models do not know (an
operator newer than this plugin) is dropped before validation instead of failing it.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

from vmresize.api.resize import ResizePhase, VMResize

M = TypeVar("M", bound=BaseModel)


def _fit(ann: Any, v: Any) -> Any:
    """``v`` with every key unknown to the model(s) in ``ann`` removed, recursively."""
    origin = get_origin(ann)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(ann) if a is not type(None)]
        return _fit(inner[0], v) if len(inner) == 1 else v
    if origin is list and isinstance(v, list):
        return [_fit(get_args(ann)[0], x) for x in v]
    if origin is dict and isinstance(v, dict):
        return {k: _fit(get_args(ann)[1], x) for k, x in v.items()}
    if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(v, dict):
        return _known(ann, v)
    return v


def _known(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    fields.update(model.model_fields)
    keep_unknown = model.model_config.get("extra") != "forbid"
    out: dict[str, Any] = {}
    for k, v in data.items():
        f = fields.get(k)
        if f is not None:
            out[k] = _fit(f.annotation, v)
        elif keep_unknown:
            out[k] = v
    return out


def parse(model: type[M], body: Mapping[str, Any]) -> M:
    """``body`` as ``model``, ignoring fields this version of the models does not know."""
    return model.model_validate(_known(model, body))


def phase_of(r: VMResize) -> ResizePhase:
    """The resize's phase (Pending before the operator first wrote its status)."""
    return r.status.phase if r.status else ResizePhase.PENDING


def human_bytes(n: float) -> str:
    """IEC size with one decimal: ``512 B``, ``42.0 MiB``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    """A duration for people: ``0.8s``, ``42s``, ``3m07s``, ``2h05m``."""
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def age(created: str | None, now: datetime) -> str:
    """kubectl's AGE column from a ``creationTimestamp``: ``42s``, ``5m``, ``3h``, ``2d``."""
    if not created:
        return "<unknown>"
    s = (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= 2 * size:
            return f"{int(s // size)}{unit}"
    return f"{max(0, int(s))}s"


def timeline(stamps: Mapping[str, datetime]) -> list[tuple[str, datetime, float | None]]:
    """(phase, entered, seconds spent in it) in the order entered; the last has None."""
    order = sorted(stamps.items(), key=lambda kv: kv[1])
    out: list[tuple[str, datetime, float | None]] = []
    for i, (phase, at) in enumerate(order):
        nxt = order[i + 1][1] if i + 1 < len(order) else None
        out.append((phase, at, (nxt - at).total_seconds() if nxt else None))
    return out


def eta_seconds(done: int, total: int, rate: int) -> float | None:
    """Seconds left at ``rate``; None when the rate or the total is not known yet."""
    if rate <= 0 or total <= 0:
        return None
    return max(0, total - done) / rate
