"""A guest that really boots, for tests and the demo: Debian's cloud kernel + busybox.

Builds, from Debian packages only, a kernel and an initramfs for a direct kernel boot
(``<os><kernel/><initrd/><cmdline/>``) under TCG. Nothing is installed on the host:
``apt-get download`` fetches ``linux-image-cloud-amd64``'s kernel and ``busybox-static``,
``dpkg-deb -x`` unpacks them, and the initramfs (a gzip'd ``newc`` cpio written here, so
no root is needed for ``/dev/console``) gets busybox, the scripts of ``hack/guest_init.py``
and the few kernel modules the cloud kernel does not build in (virtio-pci, virtio-blk,
virtio-net, the ACPI button, evdev), with their dependencies read from each module's
``.modinfo`` (the package ships no ``modules.dep``: ``depmod`` runs at install time).

Idempotent: a build is cached under ``$VMRESIZE_CACHE/guest`` (default
``~/.cache/vmresize/guest``), keyed by the kernel release and a hash of the recipe, and
reused without touching apt; a file lock keeps two sessions from building at once.

    python3 -m hack.guest build      # (from the repo root) prints the kernel and initrd

Tests use :func:`ensure_guest`; ``hack/guest_domain.py`` writes domain XML for it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hack import guest_init

KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = "busybox-static"
#: Modules the cloud kernel builds as modules (CONFIG_...=m) that the guest needs.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "button", "evdev")
BUILDER_VERSION = "1"
APT_TIMEOUT = 600.0


def cache_dir() -> Path:
    base = Path(os.environ.get("VMRESIZE_CACHE", Path.home() / ".cache" / "vmresize"))
    return base / "guest"


@dataclass(frozen=True)
class Guest:
    """A built guest: the kernel, its initramfs and what went into them."""

    kernel: Path
    initrd: Path
    release: str
    modules: tuple[str, ...]

    def cmdline(self, **options: str) -> str:
        """Kernel command line: serial console, no reboot loop on panic, ``vmresize.*``."""
        extra = "".join(f" vmresize.{k}={v}" for k, v in sorted(options.items()))
        return f"console=ttyS0 panic=-1{extra}"


def recipe_hash() -> str:
    """Changes whenever anything that goes into the initramfs changes (but the packages)."""
    h = hashlib.sha256(f"{BUILDER_VERSION}\0{','.join(MODULES)}\0".encode())
    for path, (mode, text) in sorted(guest_init.FILES.items()):
        h.update(f"{path}\0{mode}\0{text}\0".encode())
    return h.hexdigest()[:12]


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo"]


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def _apt(argv: list[str], cwd: Path | None = None) -> str:
    """Run an apt command; on failure refresh the package lists once and retry."""
    try:
        return _run(argv, cwd)
    except RuntimeError:
        _run([*_sudo(), "apt-get", "update", "-qq"])
        return _run(argv, cwd)


def kernel_package() -> str:
    """The versioned kernel package the metapackage depends on (from the local lists)."""
    out = _apt(["apt-cache", "depends", "--important", KERNEL_META])
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise RuntimeError(f"cannot find the kernel package {KERNEL_META} depends on:\n{out}")


def download(packages: list[str], dest: Path) -> list[Path]:
    """``apt-get download`` into ``dest`` (no install); returns the .deb files."""
    dest.mkdir(parents=True, exist_ok=True)
    # As root apt drops to the _apt user for downloads, which cannot write into ~root.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    debs = []
    for pkg in packages:
        existing = sorted(dest.glob(f"{pkg}_*.deb"))
        if not existing:
            _apt(["apt-get", "download", "-q", *sandbox, pkg], cwd=dest)
            existing = sorted(dest.glob(f"{pkg}_*.deb"))
        if not existing:
            raise RuntimeError(f"apt-get download {pkg} left no .deb in {dest}")
        debs.append(existing[-1])
    return debs


def _modinfo(ko: bytes) -> dict[str, str]:
    """The ``key=value`` strings of an ELF64 module's ``.modinfo`` section."""
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", ko, base)
        offset, size = struct.unpack_from("<QQ", ko, base + 0x18)
        return name, offset, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if ko[stroff + name:ko.index(b"\0", stroff + name)] == b".modinfo":
            info: dict[str, str] = {}
            for item in ko[offset:offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    raise ValueError("no .modinfo section")


def module_load_order(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``wanted`` and their dependencies, dependencies first (what modules.dep would say)."""
    index = {ko.name.removesuffix(".ko").replace("-", "_"): ko for ko in moddir.rglob("*.ko")}
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            raise RuntimeError(f"kernel module {name} not found under {moddir}")
        deps = _modinfo(index[name].read_bytes()).get("depends", "")
        for dep in filter(None, deps.split(",")):
            visit(dep)
        order.append((name, index[name]))

    for name in wanted:
        visit(name)
    return order


class Cpio:
    """A ``newc`` cpio archive in memory (what the kernel unpacks as an initramfs)."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self._out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def build_initramfs(busybox: Path, modules: list[tuple[str, Path]]) -> bytes:
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "etc/init.d", "etc/acpi", "etc/acpi/PWRF", "lib",
              "lib/modules", "proc", "sys", "run", "tmp", "var", "var/log", "root"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)  # the kernel opens it before running /init
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = _run([str(busybox), "--list"]).split()
    for applet in applets:
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    cpio.symlink("init", "bin/busybox")  # busybox init, reading /etc/inittab
    cpio.symlink("sbin", "bin")
    for name, ko in modules:
        cpio.file(f"lib/modules/{name}.ko", ko.read_bytes())
    cpio.file("lib/modules/load-order", "".join(f"{n}\n" for n, _ in modules).encode())
    for path, (mode, text) in guest_init.FILES.items():
        cpio.file(path, text.encode(), mode)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load(build: Path) -> Guest | None:
    manifest = build / "manifest.json"
    if not manifest.exists():
        return None
    doc = json.loads(manifest.read_text())
    guest = Guest(kernel=build / "vmlinuz", initrd=build / "initrd.gz",
                  release=doc["release"], modules=tuple(doc["modules"]))
    return guest if guest.kernel.exists() and guest.initrd.exists() else None


def cached_guest() -> Guest | None:
    """The newest cached build of the current recipe, if any (never touches apt)."""
    builds = sorted(cache_dir().glob(f"builds/*-{recipe_hash()}"),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for build in builds:
        guest = _load(build)
        if guest is not None:
            return guest
    return None


def ensure_guest(*, force: bool = False) -> Guest:
    """Return the cached guest, building it first if needed (see the module docstring)."""
    if not force and (guest := cached_guest()) is not None:
        return guest
    root = cache_dir()
    with _locked(root / ".lock"):
        if not force and (guest := cached_guest()) is not None:
            return guest  # another session built it while we waited
        kpkg = kernel_package()
        kdeb, bdeb = download([kpkg, BUSYBOX], root / "debs")
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            x = Path(tmp) / "x"
            for deb in (kdeb, bdeb):
                _run(["dpkg-deb", "-x", str(deb), str(x)])
            vmlinuz = next((x / "boot").glob("vmlinuz-*"))
            release = vmlinuz.name.removeprefix("vmlinuz-")
            modules = module_load_order(x / "lib" / "modules" / release, MODULES)
            out = Path(tmp) / "build"
            out.mkdir()
            shutil.copyfile(vmlinuz, out / "vmlinuz")
            (out / "initrd.gz").write_bytes(build_initramfs(x / "bin" / "busybox", modules))
            (out / "manifest.json").write_text(json.dumps({
                "release": release, "recipe": recipe_hash(),
                "modules": [n for n, _ in modules],
                "debs": [kdeb.name, bdeb.name]}, indent=2))
            final = root / "builds" / f"{release}-{recipe_hash()}"
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(final)
            out.rename(final)  # atomic: a reader sees a whole build or none
    guest = _load(final)
    assert guest is not None
    return guest


def main() -> int:
    parser = argparse.ArgumentParser(description="build the busybox test guest")
    parser.add_argument("command", choices=["build", "path"])
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args()
    guest = ensure_guest(force=args.force) if args.command == "build" else cached_guest()
    if guest is None:
        print("no cached guest; run: python3 -m hack.guest build", file=sys.stderr)
        return 1
    print(f"kernel={guest.kernel}\ninitrd={guest.initrd}\nrelease={guest.release}\n"
          f"modules={','.join(guest.modules)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
