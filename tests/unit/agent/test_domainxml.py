"""The domain definition module: inventory, refusals, the resize rewrite and the field diff.

The fixture ``data/domain-full.xml`` is shaped like libvirt's inactive XML of a Nova guest:
two NICs (OVS bridge, libvirt network), a qcow2 root on a raw backing file, a raw data
volume, a qcow2 ephemeral disk, a config-drive CD-ROM, a CPU model with a topology, OVMF
with per-VM NVRAM, CPU pins, SMBIOS, and Nova's namespaced metadata.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmresize.agent.errors import InvalidDomainConfigError
from vmresize.agent.hypervisor import domainxml as dx
from vmresize.agent.hypervisor import topology, vmfiles

ROOT = "/var/lib/vmresize"
OLD = f"{ROOT}/instances/ns/web-1/6f1c2a1e"
NEW = f"{ROOT}/instances/ns/web-1/9b0d7e44"
FULL = (Path(__file__).parent / "data" / "domain-full.xml").read_text()


def moved(*names: str) -> dict[str, str]:
    return {f"{OLD}/{n}": f"{NEW}/{n}" for n in names}


ALL_FILES = {**moved("disk.qcow2", "data.raw", "disk.eph0", "disk.config", "nvram.fd"),
             f"{ROOT}/images/debian-12.raw": f"{ROOT}/images/debian-12.raw"}


def test_inventory_lists_every_disk_with_format_and_chain() -> None:
    disks = dx.inventory(FULL)
    assert [(d.target, d.device, d.type, d.format, d.readonly) for d in disks] == [
        ("vda", "disk", "file", "qcow2", False), ("vdb", "disk", "file", "raw", False),
        ("vdc", "disk", "file", "qcow2", False), ("sda", "cdrom", "file", "raw", True)]
    assert disks[0].source == f"{OLD}/disk.qcow2"
    assert disks[0].backing == (dx.Backing("file", f"{ROOT}/images/debian-12.raw", "raw"),)
    assert all(d.backing == () for d in disks[1:])
    assert disks[3].is_media
    assert not disks[0].is_media
    assert dx.nvram(FULL) == f"{OLD}/nvram.fd"


def test_a_movable_domain_has_no_reasons() -> None:
    assert dx.unmovable(FULL, ROOT) == []
    assert dx.unmovable(FULL, ROOT + "/") == []


def _with_device(device: str) -> str:
    return FULL.replace("<controller type='sata' index='0'/>",
                        device + "<controller type='sata' index='0'/>")


@pytest.mark.parametrize(("device", "reason"), [
    ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' "
     "bus='0x3b' slot='0x00' function='0x1'/></source></hostdev>",
     "host device passed through (<hostdev type='pci'> bus=0x3b domain=0x0000 function=0x1 "
     "slot=0x00)"),
    ("<interface type='hostdev'><mac address='fa:16:3e:00:00:01'/><source><address "
     "type='pci' bus='0x3b' slot='0x02' function='0x0'/></source></interface>",
     "NIC fa:16:3e:00:00:01 is a passed-through host device (type='hostdev')"),
    ("<disk type='block' device='disk'><driver name='qemu' type='raw'/><source "
     "dev='/dev/sdb'/><target dev='vdd' bus='virtio'/></disk>",
     "disk vdd is a 'block' disk (/dev/sdb); only file-backed disks can be copied"),
    ("<disk type='network' device='disk'><driver name='qemu' type='raw'/><source "
     "protocol='rbd' name='vms/web-1_disk'/><target dev='vdd' bus='virtio'/></disk>",
     "disk vdd is a 'network' disk (rbd:vms/web-1_disk); only file-backed disks can be copied"),
    ("<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source "
     "pool='default' volume='x.qcow2'/><target dev='vdd' bus='virtio'/></disk>",
     "disk vdd is a 'volume' disk (default/x.qcow2); only file-backed disks can be copied"),
    ("<disk type='weird' device='disk'><target dev='vdd' bus='virtio'/></disk>",
     "disk vdd is a 'weird' disk (None); only file-backed disks can be copied"),
    ("<disk type='block' device='lun'><source dev='/dev/sdc'/><target dev='sdb' "
     "bus='scsi'/></disk>",
     "disk sdb is a 'lun' device (passthrough), not a copyable disk"),
    ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source "
     "file='/srv/other/x.qcow2'/><target dev='vdd' bus='virtio'/></disk>",
     f"disk vdd (/srv/other/x.qcow2) is outside the storage root {ROOT}"),
    ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source "
     f"file='{ROOT}/../etc/x.qcow2'/><target dev='vdd' bus='virtio'/></disk>",
     f"disk vdd ({ROOT}/../etc/x.qcow2) is outside the storage root {ROOT}"),
    ("<disk type='file' device='disk'><source file='" + OLD + "/nofmt'/>"
     "<target dev='vdd' bus='virtio'/></disk>",
     f"disk vdd ({OLD}/nofmt) has no format in the definition (<driver type>); formats are "
     "never probed"),
    ("<disk type='file' device='disk'><driver name='qemu' type='vmdk'/><source file='" + OLD
     + "/x.vmdk'/><target dev='vdd' bus='virtio'/></disk>",
     f"disk vdd ({OLD}/x.vmdk) has format 'vmdk'; only ['qcow2', 'raw'] move"),
    ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source "
     "file='/isos/debian.iso'/><target dev='sdb' bus='sata'/><readonly/></disk>",
     f"disk sdb (/isos/debian.iso) is a read-only medium outside the storage root {ROOT}: "
     "eject it or place it under the root before resizing"),
    ("<filesystem type='mount' accessmode='passthrough'><source dir='/srv/share'/>"
     "<target dir='share'/></filesystem>",
     "host directory shared into the guest (<filesystem> /srv/share)"),
    ("<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>",
     "emulated TPM (<tpm> backend 'emulator'): its state (swtpm's, in libvirt's state "
     "directory under the domain's UUID) does not move yet"),
    ("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend>"
     "</tpm>", "host TPM passed through (<tpm> backend 'passthrough' /dev/tpm0)"),
    ("<memory model='nvdimm'><source><path>" + OLD + "/nv.img</path></source><target><size "
     "unit='KiB'>524288</size><node>0</node></target></memory>",
     f"nvdimm memory device backed by the host file {OLD}/nv.img: its content does not "
     "move yet"),
    ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" + OLD
     + "/enc.qcow2'><encryption format='luks'><secret type='passphrase' "
     "uuid='f52a81b2-424e-490c-823d-6bd4235bc572'/></encryption></source>"
     "<target dev='vdd' bus='virtio'/></disk>",
     "disk vdd is encrypted with the libvirt secret f52a81b2-424e-490c-823d-6bd4235bc572, "
     "kept in this host's secret store: it does not move"),
])
def test_what_cannot_move_is_named(device: str, reason: str) -> None:
    assert dx.unmovable(_with_device(device), ROOT) == [reason]


def test_an_empty_cdrom_drive_moves() -> None:
    xml = _with_device("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
                       "<target dev='sdb' bus='sata'/><readonly/></disk>")
    assert dx.unmovable(xml, ROOT) == []
    assert dx.inventory(xml)[-1].source is None


def test_backing_files_and_nvram_outside_the_root_are_named() -> None:
    xml = FULL.replace(f"{ROOT}/images/debian-12.raw", "/srv/glance/debian-12.raw").replace(
        f"{OLD}/nvram.fd", "/var/lib/libvirt/qemu/nvram/web-1_VARS.fd")
    assert dx.unmovable(xml, ROOT) == [
        f"backing file 1 of disk vda (/srv/glance/debian-12.raw) is outside the storage "
        f"root {ROOT}",
        "firmware variables (NVRAM /var/lib/libvirt/qemu/nvram/web-1_VARS.fd) are outside "
        f"the storage root {ROOT}"]


def test_rewrite_changes_exactly_size_and_paths() -> None:
    after = dx.rewrite(FULL, vcpus=4, memory_mib=4096, disk_paths=ALL_FILES)
    assert dx.diff(FULL, after) == {
        "vcpu", "memory", "currentMemory", "cpu/topology@sockets",
        "devices/disk[vda]/source@file", "devices/disk[vdb]/source@file",
        "devices/disk[vdc]/source@file", "devices/disk[sda]/source@file", "os/nvram"}
    flat = dx.flatten(after)
    assert (flat["vcpu"], flat["memory"], flat["currentMemory"]) == ("4", "4194304", "4194304")
    assert (flat["cpu/topology@sockets"], flat["cpu/topology@cores"]) == ("2", "2")
    assert flat["devices/disk[vdb]/source@file"] == f"{NEW}/data.raw"
    assert flat["os/nvram"] == f"{NEW}/nvram.fd"
    # What a resize must keep, spelled out: NICs and MACs, model, UUID, firmware, metadata.
    assert flat["uuid"] == "6f1c2a1e-9a57-4c4b-9d1f-2f0c6f3b9e11"
    assert flat["devices/interface[fa:16:3e:11:22:33]/source@bridge"] == "br-int"
    assert flat["devices/interface[fa:16:3e:44:55:66]/model@type"] == "e1000e"
    assert flat["cpu/model"] == "Skylake-Client-IBRS"
    assert flat["os/loader"] == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert "<nova:instance" in after
    assert "ns0:" not in after


def test_rewrite_for_a_same_host_resize_renames_and_moves_logs() -> None:
    paths = {**ALL_FILES, **moved("serial.log")}
    after = dx.rewrite(FULL, vcpus=2, memory_mib=2048, disk_paths=paths, name="web-1-resize")
    assert dx.diff(FULL, after) == {
        "name", "devices/disk[vda]/source@file", "devices/disk[vdb]/source@file",
        "devices/disk[vdc]/source@file", "devices/disk[sda]/source@file", "os/nvram",
        "devices/serial/source@path", "devices/console/source@path"}


def test_rewrite_refuses_a_file_it_has_no_destination_for() -> None:
    paths = dict(ALL_FILES)
    del paths[f"{OLD}/data.raw"]
    with pytest.raises(InvalidDomainConfigError, match="no destination path for disk vdb"):
        dx.rewrite(FULL, vcpus=2, memory_mib=2048, disk_paths=paths)


def test_rewrite_maps_the_backing_chain_when_it_moves() -> None:
    paths = {**ALL_FILES, f"{ROOT}/images/debian-12.raw": f"{NEW}/base.raw"}
    after = dx.rewrite(FULL, vcpus=2, memory_mib=2048, disk_paths=paths)
    assert dx.diff(FULL, after) >= {"devices/disk[vda]/backingStore/source@file"}
    assert dx.inventory(after)[0].backing[0].source == f"{NEW}/base.raw"


def test_rewrite_shrinking_vcpus_drops_pins_of_vcpus_that_are_gone() -> None:
    after = dx.rewrite(FULL, vcpus=1, memory_mib=1024, disk_paths=ALL_FILES)
    flat = dx.flatten(after)
    assert flat["cpu/topology@cores"] == "1"
    assert flat["cpu/topology@sockets"] == "1"
    assert "cputune/vcpupin@vcpu" in flat
    assert "cputune/vcpupin[1]@vcpu" not in flat
    assert dx.diff(FULL, after) >= {"cputune/vcpupin[0]@vcpu", "cputune/vcpupin@vcpu"}


NUMA = FULL.replace(
    "<vcpu placement='static'>2</vcpu>", "<vcpu placement='static' current='2'>4</vcpu>"
).replace(
    "<topology sockets='1' dies='1' cores='2' threads='1'/>",
    "<topology sockets='2' dies='1' cores='1' threads='2'/><numa>"
    "<cell id='0' cpus='0-1' memory='1048576' unit='KiB'/>"
    "<cell id='1' cpus='2-3' memory='1048576' unit='KiB'/></numa>")


def test_numa_cells_share_vcpus_and_memory_and_add_up() -> None:
    """The flavor's 6 vCPUs are the ones online at boot (``current``); the 2 the domain
    kept for hot-plug stay on top, and cells and topology cover all 8."""
    after = dx.rewrite(NUMA, vcpus=6, memory_mib=3000, disk_paths=ALL_FILES)
    flat = dx.flatten(after)
    assert (flat["vcpu"], flat["vcpu@current"]) == ("8", "6")
    assert (flat["cpu/topology@sockets"], flat["cpu/topology@cores"],
            flat["cpu/topology@threads"]) == ("4", "1", "2")
    assert (flat["cpu/numa/cell[0]@cpus"], flat["cpu/numa/cell[1]@cpus"]) == ("0-3", "4-7")
    cells = [int(flat[f"cpu/numa/cell[{i}]@memory"]) for i in (0, 1)]
    assert sum(cells) == 3000 * 1024
    assert all(c % 1024 == 0 for c in cells)
    all_online = NUMA.replace(" current='2'>4<", ">4<")
    with pytest.raises(InvalidDomainConfigError, match="cannot spread 1 vCPUs over 2 NUMA cells"):
        dx.rewrite(all_online, vcpus=1, memory_mib=1024, disk_paths=ALL_FILES)


@pytest.mark.parametrize(("vcpus", "before", "after"), [
    (8, (1, 1, 4, 2), (1, 1, 4, 2)), (16, (1, 1, 4, 2), (2, 1, 4, 2)),
    (6, (1, 1, 4, 2), (1, 1, 3, 2)), (3, (1, 1, 1, 2), (3, 1, 1, 1)),
    (6, (2, 2, 1, 1), (3, 2, 1, 1)), (5, (1, 1, 2, 2), (5, 1, 1, 1)),
])
def test_topology_always_multiplies_to_the_vcpu_count(
        vcpus: int, before: tuple[int, int, int, int], after: tuple[int, int, int, int]) -> None:
    s, d, c, t = before
    got = topology.split(vcpus, sockets=s, dies=d, cores=c, threads=t)
    assert got == after
    assert got[0] * got[1] * got[2] * got[3] == vcpus


def test_max_memory_is_raised_only_when_too_low_keeping_the_room_for_hotplug() -> None:
    xml = FULL.replace("<memory unit='KiB'>", "<maxMemory slots='4' unit='GiB'>8</maxMemory>"
                                              "<memory unit='KiB'>")
    assert "maxMemory" not in dx.diff(xml, dx.rewrite(xml, vcpus=2, memory_mib=4096,
                                                      disk_paths=ALL_FILES))
    big = dx.rewrite(xml, vcpus=2, memory_mib=16384, disk_paths=ALL_FILES)
    assert dx.flatten(big)["maxMemory"] == str((16 + 6) * 1024**2)  # 8 GiB - 2 GiB room


def test_diff_sees_added_removed_and_reordered_devices() -> None:
    a = "<domain><devices><interface type='user'><mac address='m1'/></interface>" \
        "<interface type='user'><mac address='m2'/></interface></devices></domain>"
    b = "<domain><devices><interface type='user'><mac address='m2'/></interface>" \
        "<interface type='user'><mac address='m1'/></interface></devices></domain>"
    assert dx.diff(a, b) == set()  # NICs are matched by MAC, not by position
    c = "<domain><devices><interface type='user'><mac address='m1'/></interface></devices>" \
        "</domain>"
    assert dx.diff(a, c) == {"devices/interface[m2]", "devices/interface[m2]@type",
                             "devices/interface[m2]/mac", "devices/interface[m2]/mac@address"}


def test_garbage_is_an_invalid_definition() -> None:
    with pytest.raises(InvalidDomainConfigError, match="not XML"):
        dx.inventory("<domain>")


def test_libvirt_takes_the_rewrite_and_gives_back_only_the_changes() -> None:
    """Round trip through libvirt's own parser (``test:///default``): define the source,
    capture it as the agent does, define the rewrite in its place, read it back."""
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    flags = (libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
             | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    conn = libvirt.open("test:///default")
    try:
        source = conn.defineXML(FULL.replace("<domain type='kvm'>", "<domain type='test'>"))
        captured = source.XMLDesc(flags)
        assert dx.unmovable(captured, ROOT) == []
        source.undefine()
        dest = conn.defineXML(dx.rewrite(captured, vcpus=4, memory_mib=4096,
                                         disk_paths=ALL_FILES))
        assert dx.diff(captured, dest.XMLDesc(flags)) == {
            "vcpu", "memory", "currentMemory", "cpu/topology@sockets",
            "devices/disk[vda]/source@file", "devices/disk[vdb]/source@file",
            "devices/disk[vdc]/source@file", "devices/disk[sda]/source@file", "os/nvram"}
        dest.undefine()
    finally:
        conn.close()


def test_files_lists_disks_media_backing_and_nvram_relative_to_the_root() -> None:
    got = vmfiles.files(FULL, ROOT)
    rel = OLD.removeprefix(ROOT + "/")
    assert [(f.path, f.role.value, f.format, f.target, f.backing) for f in got] == [
        (f"{rel}/disk.qcow2", "Disk", "qcow2", "vda", "images/debian-12.raw"),
        (f"{rel}/data.raw", "Disk", "raw", "vdb", None),
        (f"{rel}/disk.eph0", "Disk", "qcow2", "vdc", None),
        (f"{rel}/disk.config", "Media", "raw", "sda", None),
        ("images/debian-12.raw", "Backing", "raw", None, None),
        (f"{rel}/nvram.fd", "NVRAM", "raw", None, None)]
    assert got[0].source_path == f"{OLD}/disk.qcow2"


def test_files_reads_the_chain_from_headers_when_the_xml_has_none() -> None:
    xml = FULL.replace(
        "<backingStore type='file'>\n        <format type='raw'/>\n        <source file='"
        f"{ROOT}/images/debian-12.raw'/>\n        <backingStore/>\n      </backingStore>", "")
    assert dx.inventory(xml)[0].backing == ()
    seen = []

    def chain(path: str, fmt: str) -> list[tuple[str, str]]:
        seen.append((path, fmt))
        return [(f"{OLD}/mid.qcow2", "qcow2"), (f"{ROOT}/images/base.raw", "raw")]

    got = vmfiles.files(xml, ROOT, chain)
    assert seen == [(f"{OLD}/disk.qcow2", "qcow2"), (f"{OLD}/disk.eph0", "qcow2")]
    rel = OLD.removeprefix(ROOT + "/")
    by_path = {f.path: f for f in got}
    assert by_path[f"{rel}/disk.qcow2"].backing == f"{rel}/mid.qcow2"
    assert by_path[f"{rel}/mid.qcow2"].backing == "images/base.raw"
    assert [f.path for f in got].count("images/base.raw") == 1  # shared base listed once


def test_path_map_feeds_the_rewrite() -> None:
    moved = [f.model_copy(update={"path": f"instances/x/{i}"})
             for i, f in enumerate(vmfiles.files(FULL, ROOT))]
    mapping = vmfiles.path_map(moved, "/srv/dest-root")
    after = dx.rewrite(FULL, vcpus=2, memory_mib=2048, disk_paths=mapping)
    assert dx.inventory(after)[1].source == "/srv/dest-root/instances/x/1"
    assert dx.nvram(after) == "/srv/dest-root/instances/x/5"


FOREIGN = FULL.replace("<domain type='kvm'>", "<domain type='kvm' xmlns:qemu="
                       "'http://libvirt.org/schemas/domain/qemu/1.0'>").replace(
    "</metadata>",
    "<ns0:app xmlns:ns0='http://example.org/app/1'><ns0:owner ns0:team='db'>x</ns0:owner>"
    "</ns0:app><ns1:tag xmlns:ns1='http://example.org/tag'/>"
    "<info xmlns='http://example.org/default'><item xml:lang='en'>a</item></info>"
    "<nova:instance xmlns:nova='http://example.org/other-nova'/></metadata>").replace(
    "</domain>", "<qemu:commandline><qemu:arg value='-no-hpet'/></qemu:commandline>"
                 "</domain>")
"""Foreign metadata as Python tools write it (ElementTree's own ``ns0``/``ns1``), a default
namespace, ``xml:lang``, a prefix bound to two URIs in two places, and ``qemu:`` on the
root."""


def test_foreign_namespace_prefixes_survive_rewrite_and_edit_disks() -> None:
    after = dx.rewrite(FOREIGN, vcpus=4, memory_mib=4096, disk_paths=ALL_FILES)
    edited = dx.edit_disks(after, add=(dx.NewDisk(f"{NEW}/swap", "raw", "vdd"),))
    for xml in (after, edited):
        for text in ("<ns0:app xmlns:ns0=\"http://example.org/app/1\">",
                     "<ns0:owner ns0:team=\"db\">x</ns0:owner>",
                     "<ns1:tag xmlns:ns1=\"http://example.org/tag\"",
                     "<info xmlns=\"http://example.org/default\"><item xml:lang=\"en\">",
                     "<nova:instance xmlns:nova=\"http://example.org/other-nova\"",
                     "<nova:name>web-1</nova:name>",
                     "<qemu:commandline><qemu:arg value=\"-no-hpet\" />"):
            assert text in xml
    assert dx.diff(FOREIGN, after) == dx.diff(FULL, dx.rewrite(
        FULL, vcpus=4, memory_mib=4096, disk_paths=ALL_FILES))
    assert dx.diff(after, edited) >= {"devices/disk[vdd]"}
    metadata = dx.parse(after).find("metadata")
    assert metadata is not None
    assert [el.tag for el in metadata] == ["nova:instance", "ns0:app", "ns1:tag", "info",
                                           "nova:instance"]


def test_libvirt_takes_foreign_namespaces_back_unchanged() -> None:
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open("test:///default")
    try:
        xml = dx.rewrite(FOREIGN.replace("<domain type='kvm'", "<domain type='test'"),
                         vcpus=4, memory_mib=4096, disk_paths=ALL_FILES)
        dom = conn.defineXML(xml)
        try:
            back = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "http://example.org/app/1",
                                libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            assert "team=\"db\"" in back
        finally:
            dom.undefine()
    finally:
        conn.close()


NVRAM_SOURCE = FULL.replace(
    f"<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>{OLD}/nvram.fd</nvram>",
    "<nvram type='file' template='/usr/share/OVMF/OVMF_VARS_4M.fd'>"
    f"<source file='{OLD}/nvram.fd'/></nvram>")


def test_nvram_written_the_newer_way_moves_like_the_older() -> None:
    assert NVRAM_SOURCE != FULL
    assert dx.nvram(NVRAM_SOURCE) == f"{OLD}/nvram.fd"
    assert vmfiles.files(NVRAM_SOURCE, ROOT)[-1].role.value == "NVRAM"
    after = dx.rewrite(NVRAM_SOURCE, vcpus=2, memory_mib=2048, disk_paths=ALL_FILES)
    assert dx.flatten(after)["os/nvram/source@file"] == f"{NEW}/nvram.fd"
    without = dict(ALL_FILES)
    del without[f"{OLD}/nvram.fd"]
    with pytest.raises(InvalidDomainConfigError, match="no destination path for NVRAM"):
        dx.rewrite(NVRAM_SOURCE, vcpus=2, memory_mib=2048, disk_paths=without)
    outside = NVRAM_SOURCE.replace(f"{OLD}/nvram.fd", "/var/lib/libvirt/qemu/nvram/x.fd")
    assert dx.unmovable(outside, ROOT) == [
        "firmware variables (NVRAM /var/lib/libvirt/qemu/nvram/x.fd) are outside the storage "
        f"root {ROOT}"]


def test_nvram_that_is_not_a_file_is_refused() -> None:
    xml = FULL.replace(
        f"<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>{OLD}/nvram.fd</nvram>",
        "<nvram type='network'><source protocol='iscsi' name='iqn.2013-07.com.example:nv/0'>"
        "<host name='10.0.0.7' port='3260'/></source></nvram>")
    assert dx.nvram(xml) is None
    assert dx.unmovable(xml, ROOT) == [
        "firmware variables (NVRAM) are a 'network' source "
        "(iscsi:iqn.2013-07.com.example:nv/0); only a file moves"]
