"""vCPUs and memory of definitions shaped unlike ours: every vCPU reference, memory
devices, NUMA cells without CPUs or with huge pages, vCPUs and balloon kept for later.

Each rewrite is also defined on libvirt's ``test:///default`` driver, whose parser runs
the same cross-checks as the QEMU driver's (vCPU ids in tuning, memory devices against
``<memory>``), and the memory libvirt computes must be the one the rewrite wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmresize.agent.errors import InvalidDomainConfigError
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
    "unit='MiB'/><monitor level='3' vcpus='1-2'/><monitor level='3' vcpus='2'/></cachetune>"
    "<memorytune vcpus='1-2'><node id='0' bandwidth='60'/></memorytune>"
    "<memorytune vcpus='3'><node id='0' bandwidth='40'/></memorytune></cputune>"))


def test_fewer_vcpus_leave_no_reference_to_a_vcpu_that_is_gone(define) -> None:
    got = rewrite(TUNED, 2, 4096)
    tune = {k: v for k, v in got.items() if k.startswith("cputune/") and "@vcpu" in k}
    assert tune == {"cputune/vcpupin@vcpu": "0", "cputune/vcpusched@vcpus": "0-1",
                    "cputune/cachetune[0]@vcpus": "0", "cputune/cachetune[1]@vcpus": "1",
                    "cputune/cachetune[1]/monitor@vcpus": "1",  # the one of vCPU 2 went
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


# --- finding 3: memory devices --------------------------------------------------------------

ONE_CELL = cells(("0-3", 2 * GIB))
MAX = "<maxMemory slots='16' unit='KiB'>16777216</maxMemory>"


def dimm(kib: int) -> str:
    return (f"<memory model='dimm'><target><size unit='KiB'>{kib}</size><node>0</node>"
            "</target></memory>")


VIRTIO_MEM = ("<memory model='virtio-mem'><target><size unit='KiB'>4194304</size>"
              "<node>0</node><block unit='KiB'>2048</block>"
              "<requested unit='KiB'>1048576</requested></target></memory>")
NVDIMM = ("<memory model='nvdimm'><source><path>/var/lib/vmresize/nv.img</path></source>"
          "<target><size unit='KiB'>1048576</size><node>0</node></target></memory>")


@pytest.mark.parametrize(("devices", "memory", "flavor_mib", "cell", "total"), [
    # DIMMs are RAM at boot: the flavor covers them, the cell takes the rest
    (dimm(512 * MIB) * 2, 3 * GIB, 4096, 3 * GIB, 4 * GIB),
    (dimm(512 * MIB) * 2, 3 * GIB, 1536, 512 * MIB, 1536 * MIB),
    # virtio-mem: the plugged part is RAM at boot, the rest of its size is hot-plug room
    (VIRTIO_MEM, 6 * GIB, 4096, 3 * GIB, 7 * GIB),
    # NVDIMM: persistent memory beside the flavor's RAM
    (NVDIMM, 3 * GIB, 4096, 4 * GIB, 5 * GIB),
])
def test_a_flavor_is_the_ram_at_boot_memory_devices_included(
        define, devices: str, memory: int, flavor_mib: int, cell: int, total: int) -> None:
    xml = domain(memory=memory, head=MAX, cpu=ONE_CELL, devices=devices)
    got = rewrite(xml, 4, flavor_mib)
    assert (int(got["cpu/numa/cell@memory"]), int(got["memory"]),
            int(got["currentMemory"])) == (cell, total, total)
    assert got["maxMemory"] == "16777216"
    back = define(dx.rewrite(xml, vcpus=4, memory_mib=flavor_mib, disk_paths={}))
    assert int(back["memory"]) == total  # libvirt's own sum: the cells plus every device


def test_memory_devices_without_numa_add_up_in_memory(define) -> None:
    xml = domain(memory=3 * GIB, head=MAX, devices=dimm(GIB))
    back = define(xml.replace("<cpu></cpu>", f"<cpu>{ONE_CELL}</cpu>").replace(
        "2097152", str(2 * GIB)))  # the source itself is a valid definition
    assert int(back["memory"]) == 3 * GIB
    got = rewrite(xml, 2, 2048)
    assert (int(got["memory"]), int(got["currentMemory"])) == (2 * GIB, 2 * GIB)


def test_a_flavor_smaller_than_the_memory_devices_is_refused() -> None:
    xml = domain(memory=3 * GIB, head=MAX, cpu=ONE_CELL, devices=dimm(512 * MIB) * 2)
    with pytest.raises(InvalidDomainConfigError, match=r"1024 MiB of memory does not cover the "
                       r"domain's RAM devices \(1024 MiB of DIMM and plugged virtio-mem\)"):
        rewrite(xml, 4, 1024)


def test_max_memory_is_raised_above_the_devices_too(define) -> None:
    xml = domain(memory=3 * GIB, head="<maxMemory slots='4' unit='KiB'>3145728</maxMemory>",
                 cpu=ONE_CELL, devices=dimm(GIB))
    got = rewrite(xml, 4, 8192)
    assert (int(got["memory"]), int(got["maxMemory"])) == (8 * GIB, 8 * GIB)
    define(dx.rewrite(xml, vcpus=4, memory_mib=8192, disk_paths={}))


# --- finding 4: the domain's shape ----------------------------------------------------------

def test_memory_only_cells_get_no_vcpus_and_keep_their_share(define) -> None:
    xml = domain(memory=3 * GIB, cpu=cells(("0-3", 2 * GIB), (None, GIB)))
    got = rewrite(xml, 8, 6144)
    assert got["cpu/numa/cell[0]@cpus"] == "0-7"
    assert "cpu/numa/cell[1]@cpus" not in got
    assert (int(got["cpu/numa/cell[0]@memory"]), int(got["cpu/numa/cell[1]@memory"])) == (
        4 * GIB, 2 * GIB)
    back = define(dx.rewrite(xml, vcpus=8, memory_mib=6144, disk_paths={}))
    assert "cpu/numa/cell[1]@cpus" not in back


HUGE_1G = "<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>"


@pytest.mark.parametrize(("flavor_mib", "parts"), [(6144, (3, 3)), (5120, (3, 2)),
                                                    (2048, (1, 1))])
def test_cells_are_whole_huge_pages(define, flavor_mib: int, parts: tuple[int, int]) -> None:
    xml = domain(head=HUGE_1G, cpu=cells(("0-1", 2 * GIB), ("2-3", 2 * GIB)))
    got = rewrite(xml, 4, flavor_mib)
    assert (int(got["cpu/numa/cell[0]@memory"]), int(got["cpu/numa/cell[1]@memory"])) == (
        parts[0] * GIB, parts[1] * GIB)
    define(dx.rewrite(xml, vcpus=4, memory_mib=flavor_mib, disk_paths={}))


def test_memory_that_cannot_be_cut_into_huge_pages_is_refused() -> None:
    xml = domain(head=HUGE_1G, cpu=cells(("0-1", 2 * GIB), ("2-3", 2 * GIB)))
    with pytest.raises(InvalidDomainConfigError, match=r"5000 MiB cannot be cut into 2 NUMA cells "
                       r"of whole pages \(1024 MiB\)"):
        rewrite(xml, 4, 5000)
    no_numa = domain(head="<memoryBacking><hugepages/></memoryBacking>")
    assert rewrite(no_numa, 4, 3000)["memory"] == str(3000 * MIB)
    with pytest.raises(InvalidDomainConfigError, match="3001 MiB of initial memory is not a whole "
                       "number of the 2 MiB huge pages"):
        rewrite(no_numa, 4, 3001)


def test_huge_pages_per_cell() -> None:
    xml = domain(head="<memoryBacking><hugepages><page size='2048' unit='KiB' nodeset='0'/>"
                      "<page size='1048576' unit='KiB' nodeset='1'/></hugepages>"
                      "</memoryBacking>",
                 cpu=cells(("0-1", 2 * GIB), ("2-3", 2 * GIB)))
    got = rewrite(xml, 4, 5000)
    c0, c1 = int(got["cpu/numa/cell[0]@memory"]), int(got["cpu/numa/cell[1]@memory"])
    assert c0 + c1 == 5000 * MIB
    assert c1 % GIB == 0
    assert c0 % (2 * MIB) == 0


def test_vcpus_kept_offline_for_hotplug_stay_offline(define) -> None:
    xml = domain(vcpu="<vcpu placement='static' current='2'>4</vcpu>",
                 cpu="<topology sockets='4' dies='1' cores='1' threads='1'/>")
    for flavor, top in ((4, 6), (1, 3)):
        got = rewrite(xml, flavor, 4096)
        assert (got["vcpu"], got["vcpu@current"], got["cpu/topology@sockets"]) == (
            str(top), str(flavor), str(top))
        back = define(dx.rewrite(xml, vcpus=flavor, memory_mib=4096, disk_paths={}))
        assert (back["vcpu"], back["vcpu@current"]) == (str(top), str(flavor))


def test_an_inflated_balloon_keeps_its_share(define) -> None:
    xml = domain(memory=4 * GIB, current=2 * GIB)
    assert (rewrite(xml, 4, 8192)["currentMemory"], rewrite(xml, 4, 1000)["currentMemory"]) == (
        str(4 * GIB), str(500 * MIB))
    back = define(dx.rewrite(xml, vcpus=4, memory_mib=8192, disk_paths={}))
    assert back["currentMemory"] == str(4 * GIB)
    untouched = domain(memory=4 * GIB)
    assert rewrite(untouched, 4, 8192)["currentMemory"] == str(8 * GIB)


def test_size_refusal_names_what_rewrite_would_refuse_and_leaves_the_domain_alone() -> None:
    xml = domain(cpu=cells(("0-1", 2 * GIB), ("2-3", 2 * GIB)))
    assert dx.size_refusal(xml, vcpus=1, memory_mib=4096) == (
        "cannot spread 1 vCPUs over 2 NUMA cells")
    assert dx.size_refusal(xml, vcpus=2, memory_mib=4096) is None
    tree = dx.parse(xml)
    assert dx.size_refusal(tree, vcpus=8, memory_mib=8192) is None
    assert dx.flatten(dx.serialize(tree)) == dx.flatten(xml)  # the caller's tree unchanged
