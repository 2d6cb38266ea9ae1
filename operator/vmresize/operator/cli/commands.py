"""The plugin's commands: each takes the parsed arguments and returns an exit status.

``start`` and ``migrate`` create a VMResize (and with ``--wait`` follow it to
VerifyResize); ``watch`` follows one; ``confirm``, ``revert`` and ``cancel`` merge-patch its spec as
``kubectl patch --type merge`` would (the API server judges; its refusal is printed as it
is); ``list`` is ``kubectl get vmresize`` with progress; ``plan`` asks the operator's
scheduler without changing anything (:mod:`vmresize.operator.cli.planning`).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from vmresize.api.apierrors import ApiErrorKind
from vmresize.api.flavor import Flavor
from vmresize.api.host import Host
from vmresize.api.instance import Instance
from vmresize.api.meta import API_VERSION
from vmresize.api.quota import VMQuota
from vmresize.api.resize import VMResize
from vmresize.operator.cli.autoconfirm import auto_confirm
from vmresize.operator.cli.exitcodes import Exit
from vmresize.operator.cli.follow import Until, follow
from vmresize.operator.cli.kube import Kube, PluginApiError
from vmresize.operator.cli.output import Out
from vmresize.operator.cli.planning import Plan, make_plan
from vmresize.operator.cli.quotaview import quota_lines
from vmresize.operator.cli.views import age, human_bytes, human_seconds, parse, phase_of
from vmresize.operator.decisions.quota import QUOTA_EXCEEDED
from vmresize.operator.decisions.scheduler import NoValidHost, Selection
from vmresize.operator.settings import Settings

#: A generated name is ``<instance>-resize-<5 random>``; the instance part is cut so that the
#: whole stays a DNS-1123 label (63).
_NAME_ROOM = 63 - len("-resize-") - 5


def _create(kube: Kube, out: Out, args: argparse.Namespace, flavor: str | None) -> Exit:
    spec: dict[str, Any] = {"instanceName": args.instance}
    if flavor:
        spec["flavor"] = flavor
    if args.to:
        spec["targetHost"] = args.to
    if args.bandwidth:
        spec["bandwidthMiBps"] = args.bandwidth
    auto = auto_confirm(args)
    if auto is not None:
        spec["autoConfirm"] = auto
    meta = ({"name": args.name} if args.name
            else {"generateName": f"{args.instance[:_NAME_ROOM].rstrip('-')}-resize-"})
    made = kube.create_resize({"apiVersion": API_VERSION, "kind": "VMResize",
                               "metadata": meta, "spec": spec})
    name = made["metadata"]["name"]
    what = f"to flavor {flavor}" if flavor else "(cold migration)"
    out.line(f"vmresize.vmresize.io/{name} created: {args.instance} {what}")
    if not args.wait:
        out.line(f"follow it: kubectl vmresize watch {name}")
        return Exit.OK
    # With a check the verdict is the operator's: follow it to Confirmed or Reverted.
    until = Until.END if auto and "check" in auto else Until.VERIFY
    return follow(kube, out, name, until, args.timeout)


def start(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Create a resize of INSTANCE to ``--flavor``; with ``--wait`` follow it."""
    return _create(kube, out, args, args.flavor)


def migrate(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Create a cold migration of INSTANCE (same flavor); with ``--wait`` follow it."""
    return _create(kube, out, args, None)


def watch(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Follow a resize to VerifyResize (or, once confirmed or reverted, to its end)."""
    return follow(kube, out, args.resize, Until.VERIFY, args.timeout)


def _decide(kube: Kube, out: Out, args: argparse.Namespace, field: str) -> Exit:
    before = parse(VMResize, kube.patch_resize_spec(args.resize, {field: True}))
    out.line(f"vmresize.vmresize.io/{args.resize} patched: spec.{field}=true "
             f"(phase {phase_of(before).value})")
    if not args.wait:
        return Exit.OK
    return follow(kube, out, args.resize, Until.END, args.timeout)


def confirm(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Keep the new copy: set ``spec.confirm``; with ``--wait`` follow it to Confirmed."""
    return _decide(kube, out, args, "confirm")


def revert(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Go back to the old host and flavor: set ``spec.revert``; ``--wait`` to Reverted."""
    return _decide(kube, out, args, "revert")


def cancel(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """Stop a resize before VerifyResize: set ``spec.cancel``; ``--wait`` to Cancelled. The
    API server refuses it from VerifyResize on (revert there) and prints why."""
    return _decide(kube, out, args, "cancel")


def list_(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """The resizes of the namespace (or all namespaces), like ``kubectl get vmresize``."""
    now = datetime.now(UTC)
    rows = []
    for body in kube.list("vmresizes", all_namespaces=args.all_namespaces):
        r = parse(VMResize, body)
        st = r.status
        p = st.progress if st else None
        progress = (f"{p.percent}% {human_bytes(p.bytes_done)}/{human_bytes(p.bytes_total)}"
                    if p and p.bytes_total else "")
        row = [r.name, phase_of(r).value, r.spec.instance_name,
               (st.source_host if st else None) or "", (st.dest_host if st else None) or "",
               (st.new_flavor if st else None) or (r.spec.flavor or ""), progress,
               age(r.metadata.get("creationTimestamp"), now)]
        rows.append([r.namespace, *row] if args.all_namespaces else row)
    if not rows:
        where = "any namespace" if args.all_namespaces else f"namespace {kube.namespace}"
        out.line(f"No VMResizes found in {where}.")
        return Exit.OK
    headers = ["name", "phase", "instance", "from", "to", "flavor", "progress", "age"]
    out.table(["namespace", *headers] if args.all_namespaces else headers, rows)
    return Exit.OK


def _recent_resizes(kube: Kube) -> tuple[list[VMResize], str]:
    """Every namespace's resizes if we may list them, else this namespace's."""
    try:
        return [parse(VMResize, b) for b in kube.list("vmresizes", True)], "all namespaces"
    except PluginApiError as e:
        if e.kind is not ApiErrorKind.REJECTED:
            raise
        return ([parse(VMResize, b) for b in kube.list("vmresizes")],
                f"namespace {kube.namespace}")


def plan(kube: Kube, out: Out, args: argparse.Namespace) -> Exit:
    """What a resize would do, without doing it; exit 0 if a host fits."""
    settings = Settings.from_env()
    inst = parse(Instance, kube.get("instances", args.instance))
    name = args.flavor or (inst.status.flavor if inst.status else None) or inst.spec.flavor
    flavor = parse(Flavor, kube.get("flavors", name))
    hosts = [parse(Host, b) for b in kube.list("hosts")]
    resizes, scope = _recent_resizes(kube)
    p = make_plan(inst, flavor, args.to, hosts, resizes, settings, datetime.now(UTC),
                  last=args.history, bandwidth_mibps=args.bandwidth)
    code = show_plan(out, p, scope, args.history)
    try:
        quotas = [parse(VMQuota, b) for b in kube.list("vmquotas")]
    except PluginApiError as e:   # not readable here: say so, the plan stands
        if e.kind is not ApiErrorKind.REJECTED:
            raise
        out.line(f"quota: VMQuotas not readable here ({e.message})")
        return code
    lines, refusal = quota_lines(quotas, f"{inst.namespace}/(planned)",
                                 flavor.spec.resources())
    for line in lines:
        out.line(line)
    if refusal is not None:
        out.line(f"the operator would refuse it: {QUOTA_EXCEEDED}: {refusal}", style="bold red")
        return Exit.FAILED if code is Exit.OK else code
    return code


def show_plan(out: Out, p: Plan, scope: str, last: int) -> Exit:
    """Print a plan; its exit status (0 fits, 3 refused by the operator, 4 no host)."""
    kind = "cold migration" if p.cold else f"resize to flavor {p.flavor}"
    out.line(f"plan: {kind} of {p.instance} (now flavor {p.old_flavor} on {p.source_host})",
             style="bold")
    if p.refused:
        out.line(f"the operator would refuse it: {p.refused}", style="bold red")
    rows = []
    for h in p.hosts:
        if isinstance(p.outcome, Selection) and h.name == p.outcome.host:
            verdict = f"chosen (weight {h.weight})"
        elif isinstance(p.outcome, Selection) and h.name in p.outcome.alternates:
            verdict = f"alternate (weight {h.weight})"
        elif h.removed_by is None:
            verdict = "fits" + (f" (weight {h.weight})" if h.weight is not None else "")
        else:
            verdict = f"removed by {h.removed_by}"
        c, m, d = h.free
        rows.append([h.name, f"{c:g}", f"{m:g}", f"{d:g}", verdict])
    out.table(["host", "free vcpus", "free MiB", "free GiB", "scheduler"], rows)
    if isinstance(p.outcome, NoValidHost):
        counts = ", ".join(f"{k}={v}" for k, v in p.outcome.counts.items())
        out.line(f"NoValidHost: none of {p.outcome.total} hosts fits; removed by each "
                 f"filter: {counts}", style="bold red")
    elif isinstance(p.outcome, Selection):
        alts = ", ".join(p.outcome.alternates) or "none"
        out.line(f"scheduler: {p.outcome.host} (alternates: {alts}): it passes every filter "
                 f"and weighs most (weighers: {p.weighers})", style="bold green")
    _show_data(out, p, scope, last)
    if p.refused:
        return Exit.FAILED
    return Exit.NO_VALID_HOST if isinstance(p.outcome, NoValidHost) else Exit.OK


def _show_data(out: Out, p: Plan, scope: str, last: int) -> None:
    virtual = f"{p.virtual_gib} GiB" if p.virtual_gib is not None else "unknown"
    if p.moved_bytes is not None and p.moved_at is not None:
        out.line(f"data to move: about {human_bytes(p.moved_bytes)} allocated (what the last "
                 f"move of {p.instance} sent, {p.moved_at:%Y-%m-%d %H:%M}Z); "
                 f"virtual size {virtual}")
    else:
        out.line(f"data to move: allocated size not known (the Instance status does not "
                 f"publish it and {p.instance} was never moved); virtual size {virtual}, "
                 "the upper bound")
    if p.limit.mibps is not None:
        out.line(f"bandwidth: the copy runs under {p.limit.mibps} MiB/s"
                 + (f" ({p.limit.note})" if p.limit.note else ""))
    h = p.history
    if h.count == 0 and p.limit.mibps is None:
        out.line(f"history: no history (no finished disk copy in {scope}): no prediction")
        return
    rate = (f"{human_bytes(h.rate_bytes_per_second)}/s" if h.rate_bytes_per_second
            else "no rate recorded")
    down = (human_seconds(h.downtime_seconds) if h.downtime_seconds is not None
            else "no downtime recorded")
    if h.count:
        out.line(f"history: median of the last {h.count} finished copies (of at most "
                 f"{last}, {scope}): rate {rate}, downtime {down}")
    else:
        out.line(f"history: no finished disk copy in {scope}: predicted at the limit alone "
                 "(the network may be slower)")
    parts = []
    if p.copy_seconds is not None:
        parts.append(f"copy about {human_seconds(p.copy_seconds)}")
    if p.bound_seconds is not None:
        parts.append(f"at most {human_seconds(p.bound_seconds)} for the whole virtual size")
    if h.power_off_wait_seconds is not None:
        parts.append(f"power-off wait about {human_seconds(h.power_off_wait_seconds)} "
                     "(the VM still runs)")
    if h.downtime_seconds is not None:
        parts.append(f"downtime about {human_seconds(h.downtime_seconds)}")
    out.line("prediction: " + ("; ".join(parts) if parts else "none (no rate recorded)"))
