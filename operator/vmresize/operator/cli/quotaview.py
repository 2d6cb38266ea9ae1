"""``kubectl vmresize plan``'s quota lines: the headroom of each VMQuota of the namespace and
whether the planned resize fits under it (the same arithmetic the operator charges with,
:mod:`vmresize.operator.decisions.quota`)."""

from __future__ import annotations

from collections.abc import Sequence

from vmresize.api.meta import Resources
from vmresize.api.quota import QuotaCharge, VMQuota, VMQuotaStatus
from vmresize.operator.decisions import quota as rules

_LABELS = {"instances": ("instances", ""), "vcpus": ("vCPUs", ""),
           "memory_mib": ("memory", " MiB"), "disk_gib": ("disk", " GiB")}


def quota_lines(quotas: Sequence[VMQuota], consumer: str, asked: Resources
                ) -> tuple[list[str], str | None]:
    """One line per quota (used / hard and what is left of each limit), and the refusal
    the operator would give a resize that asks ``asked`` on its destination (None: fits)."""
    lines: list[str] = []
    refusal: str | None = None
    charge = QuotaCharge(consumer=consumer, kind="VMResize", instances=0, resources=asked)
    for q in sorted(quotas, key=lambda q: q.name):
        st = q.status or VMQuotaStatus()
        left = rules.headroom(q.spec.hard, st.used)
        parts = []
        for field, room in left.items():
            label, unit = _LABELS[field]
            used = getattr(st.used, field)
            parts.append(f"{label} {used}{unit} used, no limit" if room is None else
                         f"{label} {used}/{getattr(q.spec.hard, field)}{unit} ({room}{unit} "
                         "left)")
        lines.append(f"quota {q.name}: " + "; ".join(parts))
        refusal = refusal or rules.exceeded(q.name, q.spec.hard, st.charges,
                                            "VMResize/(planned)", charge)
    if not quotas:
        lines.append("quota: no VMQuota in this namespace (no limit)")
    elif refusal is None:
        lines.append(f"quota: the resize fits (+{asked.vcpus} vCPUs, +{asked.memory_mib} MiB, "
                     f"+{asked.disk_gib} GiB while both copies exist)")
    return lines, refusal
