"""vCPUs and memory of definitions shaped unlike ours: every vCPU reference, memory
devices, NUMA cells without CPUs or with huge pages, vCPUs and balloon kept for later.

Each rewrite is also defined on libvirt's ``test:///default`` driver, whose parser runs
the same cross-checks as the QEMU driver's (vCPU ids in tuning, memory devices against
``<memory>``), and the memory libvirt computes must be the one the rewrite wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmresize.agent.hypervisor import domainxml as dx
from vmresize.agent.hypervisor import topology

MIB = 1024
GIB = 1024 * 1024


def domain(*, vcpu: str = "<vcpu placement='static'>4</vcpu>", memory: int = 4 * GIB,
           current: int | None = None, head: str = "", cpu: str = "", devices: str = "") -> str:
    return (f"<domain type='test'><name>sizes</name><memory unit='KiB'>{memory}</memory>"
            f"<currentMemory unit='KiB'>{current or memory}</currentMemory>{head}{vcpu}"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<cpu>{cpu}</cpu><devices>{devices}</devices></domain>")


def cells(*specs: tuple[str | None, int]) -> str:
    out = "<numa>"
    for i, (cpus, kib) in enumerate(specs):
        c = f" cpus='{cpus}'" if cpus else ""
        out += f"<cell id='{i}'{c} memory='{kib}' unit='KiB'/>"
    return out + "</numa>"


def rewrite(xml: str, vcpus: int, memory_mib: int) -> dict[str, str]:
    return dx.flatten(dx.rewrite(xml, vcpus=vcpus, memory_mib=memory_mib, disk_paths={}))


@pytest.fixture(scope="module")
def define() -> Iterator[object]:
    """``define(xml)``: libvirt's own reading of ``xml`` (flattened), after defining it
    with schema validation on ``test:///default`` and undefining it again."""
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open("test:///default")

    def run(xml: str) -> dict[str, str]:
        dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        try:
            return dx.flatten(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        finally:
            dom.undefine()
    yield run
    conn.close()


# --- finding 2: every element naming vCPU ids ------------------------------------------

TUNED = domain(head=(
    "<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='3' cpuset='1'/>"
    "<emulatorpin cpuset='0'/>"
    "<vcpusched vcpus='0-1' scheduler='fifo' priority='10'/>"
    "<vcpusched vcpus='2-3' scheduler='batch'/>"
    "<cachetune vcpus='0'><cache id='0' level='3' type='both' size='3' unit='MiB'/>"
    "</cachetune><cachetune vcpus='1-2'><cache id='0' level='3' type='both' size='2' "
    "unit='MiB'/></cachetune>"
    "<memorytune vcpus='1-2'><node id='0' bandwidth='60'/></memorytune>"
    "<memorytune vcpus='3'><node id='0' bandwidth='40'/></memorytune></cputune>"))


def test_fewer_vcpus_leave_no_reference_to_a_vcpu_that_is_gone(define) -> None:
    got = rewrite(TUNED, 2, 4096)
    tune = {k: v for k, v in got.items() if k.startswith("cputune/") and "@vcpu" in k}
    assert tune == {"cputune/vcpupin@vcpu": "0", "cputune/vcpusched@vcpus": "0-1",
                    "cputune/cachetune[0]@vcpus": "0", "cputune/cachetune[1]@vcpus": "1",
                    "cputune/memorytune@vcpus": "1"}
    assert got["cputune/emulatorpin@cpuset"] == "0"
    back = define(dx.rewrite(TUNED, vcpus=2, memory_mib=4096, disk_paths={}))
    assert back["vcpu"] == "2"
    assert back["cputune/memorytune@vcpus"] == "1"


def test_more_vcpus_keep_the_tuning_as_it_was(define) -> None:
    got = rewrite(TUNED, 8, 4096)
    assert (got["cputune/vcpusched[1]@vcpus"], got["cputune/memorytune[1]@vcpus"]) == ("2-3",
                                                                                        "3")
    define(dx.rewrite(TUNED, vcpus=8, memory_mib=4096, disk_paths={}))


@pytest.mark.parametrize(("text", "ids", "canonical"), [
    ("0-3", {0, 1, 2, 3}, "0-3"), ("0,2,4-5,^4", {0, 2, 5}, "0,2,5"),
    ("1-2,5,6,7", {1, 2, 5, 6, 7}, "1-2,5-7"), ("3", {3}, "3")])
def test_cpusets_read_and_write_as_libvirt_does(text: str, ids: set[int],
                                                 canonical: str) -> None:
    assert topology.parse_cpuset(text) == ids
    assert topology.format_cpuset(ids) == canonical


# --- finding 4: the domain's shape ----------------------------------------------------------

def test_memory_only_cells_get_no_vcpus_and_keep_their_share(define) -> None:
    xml = domain(memory=3 * GIB, cpu=cells(("0-3", 2 * GIB), (None, GIB)))
    got = rewrite(xml, 8, 6144)
    assert got["cpu/numa/cell[0]@cpus"] == "0-7"
    assert "cpu/numa/cell[1]@cpus" not in got
    back = define(dx.rewrite(xml, vcpus=8, memory_mib=6144, disk_paths={}))
    assert "cpu/numa/cell[1]@cpus" not in back


def test_vcpus_kept_offline_for_hotplug_stay_offline(define) -> None:
    xml = domain(vcpu="<vcpu placement='static' current='2'>4</vcpu>",
                 cpu="<topology sockets='4' dies='1' cores='1' threads='1'/>")
    for flavor, top in ((4, 6), (1, 3)):
        got = rewrite(xml, flavor, 4096)
        assert (got["vcpu"], got["vcpu@current"], got["cpu/topology@sockets"]) == (
            str(top), str(flavor), str(top))
        back = define(dx.rewrite(xml, vcpus=flavor, memory_mib=4096, disk_paths={}))
        assert (back["vcpu"], back["vcpu@current"]) == (str(top), str(flavor))
