"""Scheduler filters and weighers over plain data."""

from __future__ import annotations

from dataclasses import replace

from vmresize.operator.decisions.scheduler import (
    HostState,
    NoValidHost,
    Request,
    Selection,
    Weights,
    fits,
    select,
    selector_from_extra_specs,
)

NOW = 5000.0   # the operator's monotonic clock


def host(name: str, **kw: object) -> HostState:
    base = HostState(name=name, heard=NOW - 5, vcpus=8,
                     memory_mib=16384 + 512, disk_gib=100)
    return replace(base, **kw)  # type: ignore[arg-type]


def req(**kw: object) -> Request:
    base = Request(vcpus=2, memory_mib=4096, disk_gib=20, clock=NOW)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_free_counts_ratios_reserved_and_allocations() -> None:
    h = host("a", vcpus=4, cpu_ratio=4.0, used_vcpus=10, ram_ratio=1.5, memory_mib=2512,
             used_memory_mib=1000, disk_gib=10, disk_ratio=2.0, reserved_disk_gib=2,
             used_disk_gib=6)
    assert h.free() == (6.0, 2000.0, 10.0)
    assert fits(h, 6, 2000, 10) is None
    assert fits(h, 7, 1, 1) == "VCPU"
    assert fits(h, 1, 2001, 1) == "RAM"
    assert fits(h, 1, 1, 11) == "Disk"


def test_each_filter_is_counted() -> None:
    hosts = [
        host("disabled", enabled=False),
        host("stale", heard=NOW - 61),
        host("never", heard=None),
        host("down", ready=False),
        host("src"),
        host("nolabel"),
        host("small-cpu", vcpus=0),
        host("small-ram", used_memory_mib=16000),
        host("small-disk", used_disk_gib=90),
    ]
    out = select(hosts, req(source_host="src", selector={"zone": "a"}), Weights())
    assert isinstance(out, NoValidHost)
    assert out.total == 9
    assert out.counts == {"ForcedHost": 0, "Enabled": 1, "Heartbeat": 3, "SameHost": 1,
                          "HostSelector": 4, "VCPU": 0, "RAM": 0, "Disk": 0}
    labelled = [replace(h, labels={"zone": "a"}) for h in hosts if h.name != "nolabel"]
    out = select(labelled, req(source_host="src", selector={"zone": "a"}), Weights())
    assert isinstance(out, NoValidHost)
    assert (out.counts["VCPU"], out.counts["RAM"], out.counts["Disk"]) == (1, 1, 1)
    assert out.counts["HostSelector"] == 0


def test_same_host_policy() -> None:
    hosts = [host("src")]
    assert isinstance(select(hosts, req(source_host="src"), Weights()), NoValidHost)
    out = select(hosts, req(source_host="src", allow_same_host=True), Weights())
    assert isinstance(out, Selection)
    assert out.host == "src"
    # A cold migration excludes the current host whatever the policy says.
    out2 = select(hosts, req(source_host="src", allow_same_host=True,
                             exclude=frozenset({"src"})), Weights())
    assert isinstance(out2, NoValidHost)
    assert out2.counts["SameHost"] == 1


def test_forced_host() -> None:
    hosts = [host("a"), host("b"), host("c")]
    out = select(hosts, req(forced_host="b"), Weights())
    assert isinstance(out, Selection)
    assert out.host == "b"
    assert out.alternates == ()


def test_ram_weigher_spreads_and_negative_packs() -> None:
    hosts = [host("a", used_memory_mib=8000), host("b"), host("c", used_memory_mib=4000)]
    out = select(hosts, req(), Weights())
    assert isinstance(out, Selection)
    assert out.host == "b"
    assert out.alternates == ("c", "a")
    packed = select(hosts, req(), Weights(ram=-1.0))
    assert isinstance(packed, Selection)
    assert packed.host == "a"


def test_cpu_and_disk_weighers() -> None:
    hosts = [host("a", used_vcpus=20), host("b", used_disk_gib=50)]
    out = select(hosts, req(), Weights(ram=0, cpu=1.0))
    assert isinstance(out, Selection)
    assert out.host == "b"
    out = select(hosts, req(), Weights(ram=0, disk=1.0))
    assert isinstance(out, Selection)
    assert out.host == "a"


def test_alternates_are_bounded_and_ties_break_by_name() -> None:
    hosts = [host(f"h{i}") for i in range(10)]
    out = select(hosts, req(max_alternates=2), Weights())
    assert isinstance(out, Selection)
    assert out.host == "h0"
    assert out.alternates == ("h1", "h2")


def test_selector_from_flavor_extra_specs() -> None:
    specs = {"aggregate_instance_extra_specs:ssd": "true", "hw:cpu_policy": "dedicated"}
    assert selector_from_extra_specs(specs) == {"ssd": "true"}


def test_ten_thousand_hosts() -> None:
    hosts = [host(f"h{i:05d}", used_memory_mib=(i * 37) % 16000) for i in range(10_000)]
    out = select(hosts, req(), Weights())
    assert isinstance(out, Selection)
    assert len(out.alternates) == 2
