"""On-demand benchmark (not a test): our send_disk vs OpenSSH scp and rsync --sparse.

Usage::

    .venv/bin/python bench/transfer.py [--workdir DIR] [--repeat N] [--size-mib 1024]

Builds a 1 GiB dense file and a 1 GiB file holding 64 MiB of data, then times, in one run,
``--repeat`` (default 3) interleaved rounds of:

* ours   ``send_disk`` to a migration server running in a separate Python process
         (aes128-gcm, sparse-aware, end-to-end checksum verified, fsync before rename),
         both ends on the transfer's fast path (installed after its self-test passed, as
         the agent does);
* stock  the same, both ends on asyncssh's own packet path (the fallback an agent uses
         when the fast path fails its self-test or is turned off);
* scp    ``scp -c aes128-gcm@openssh.com`` to a throwaway ``sshd`` started here;
* rsync  ``rsync --sparse`` over the same ``ssh -c aes128-gcm@openssh.com``.

Everything listens on 127.0.0.1 only, keys are generated for the run, every process this
script starts is stopped by its PID, and the workdir is removed at the end. Source files are
read from the page cache for every tool alike, and each run starts after a ``sync`` (no
writeback left over from the previous tool). For each tool and file it reports the median
wall time with its spread (min/max), the CPU seconds of both ends (sender: this process, or
scp/rsync and ssh; receiver: our server process, or sshd's children) and the ratios
other/ours of the medians (> 1 means ours is faster) against the targets of DESIGN.md
(dense >= 1.2x, sparse >= 5x the best of scp/rsync; the fallback at least as fast as
scp). Results also go to ``bench/results/transfer.{json,md}``, stamped with the machine
and the load average (the numbers mean little on a busy machine; there the CPU seconds
say more than wall time).

Bandwidth rows: a dense file of ``--limit-size-mib`` (default 32; at least 4 s worth of the
limit, so the fixed cost of handshake and verification stays small) sent by ours (fast path)
under each limit of ``--limits`` (MiB/s, default ``8,32``), the limit against the achieved
rate (apparent size / wall time, handshake and verification included), which must be
within 10% of it. ``--bandwidth-only`` runs just these rows (a few seconds, no 1 GiB files,
no scp/rsync) and writes ``bench/results/transfer-bandwidth.{json,md}``; a full run adds them
to ``transfer.{json,md}``.

Diagnostic: ``BENCH_NO_FSYNC=1`` makes our receiver skip the fsync before the rename (scp
and rsync do not fsync either); the default measures the durable path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import report  # bench/report.py: this script's directory is first on sys.path

REPO = Path(__file__).resolve().parent.parent

MiB = 1024 * 1024
SSHD = "/usr/sbin/sshd"
CIPHER = "aes128-gcm@openssh.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_files(work: Path, size: int) -> tuple[Path, Path]:
    dense, sparse = work / "dense.img", work / "sparse.img"
    with dense.open("wb") as f:
        for _ in range(size // (64 * MiB)):
            f.write(os.urandom(64 * MiB))
    fd = os.open(sparse, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        step = size // 16
        chunk = min(4 * MiB, step // 2)
        for i in range(16):  # 16 x 4 MiB = 64 MiB of data spread over a 1 GiB file
            os.pwrite(fd, os.urandom(chunk), i * step + 4096)
    finally:
        os.close(fd)
    return dense, sparse


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True)
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    """A throwaway sshd on 127.0.0.1 with its own config, keys and authorized_keys."""

    def __init__(self, work: Path, client_pub: str) -> None:
        self.dir = work / "sshd"
        self.dir.mkdir()
        self.port = free_port()
        self.host_pub = keygen(self.dir / "host_key")
        (self.dir / "authorized_keys").write_text(client_pub + "\n")
        (self.dir / "sshd_config").write_text(f"""
ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.dir / "host_key"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Ciphers {CIPHER},aes256-gcm@openssh.com,chacha20-poly1305@openssh.com
Compression no
Subsystem sftp internal-sftp
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stderr=(self.dir / "sshd.log").open("wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.dir / 'sshd.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def ssh_opts(work: Path, sshd: Sshd, client_key: Path) -> list[str]:
    known = work / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_pub}\n")
    return ["-F", "/dev/null", "-i", str(client_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "Compression=no", "-c", CIPHER]


class Sample:
    """One timed transfer: wall seconds and the CPU seconds of both ends."""

    def __init__(self, wall: float, sender_cpu: float, receiver_cpu: float) -> None:
        self.wall, self.sender_cpu, self.receiver_cpu = wall, sender_cpu, receiver_cpu


def settle() -> None:
    """Write back what the previous tool left dirty (scp and rsync do not fsync), so that
    its writeback does not land in the next tool's time; the sources stay cached."""
    os.sync()


def timed(argv: list[str], sshd: Sshd) -> Sample:
    assert sshd.proc is not None
    settle()
    c0 = report.self_cpu(resource.RUSAGE_CHILDREN)
    r0 = report.proc_cpu(sshd.proc.pid, children=True)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    time.sleep(0.2)  # let sshd reap its session child, so that its CPU is counted
    return Sample(wall, report.self_cpu(resource.RUSAGE_CHILDREN) - c0,
                  report.proc_cpu(sshd.proc.pid, children=True) - r0)


class OurServer:
    """The migration server in its own process (as on a real destination host)."""

    def __init__(self, work: Path, client_pub: str, path: str) -> None:
        self.path = path  # "fast" or "stock"
        self.root = work / f"ours-root-{path}"
        self.root.mkdir()
        self.client_pub = client_pub
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.host_pub = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.root), self.client_pub, self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        port, self.host_pub = self.proc.stdout.readline().strip().split(" ", 1)
        self.port = int(port)

    def expect(self, tid: str, rel: str, size: int) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{tid} {rel} {size}\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ok":
            raise RuntimeError("server refused expect")

    def stop(self) -> None:
        """Close its stdin (it then closes the server and exits); SIGKILL it by PID if not."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def serve(root: str, client_pub: str, path: str) -> None:
    """Child process: run a MigrationServer; register transfers read from stdin."""
    from vmresize.agent.transfer import fastpath_check, session
    from vmresize.agent.transfer.keys import generate_key, public_openssh
    from vmresize.agent.transfer.server import start_migration_server

    if os.environ.get("BENCH_NO_FSYNC") == "1":  # diagnostic only: do what scp does
        def commit(fd: int, partial: Path, final: Path) -> None:
            os.rename(partial, final)
        session.commit = commit  # type: ignore[assignment]

    async def main() -> None:
        state = await fastpath_check.enable(path == "fast")
        if state.active != (path == "fast"):
            raise SystemExit(f"server: wanted the {path} path: {state.message}")
        key = generate_key()
        server = await start_migration_server(root=Path(root), host_key=key,
                                              authorized_keys=[client_pub], host="127.0.0.1")
        print(server.port, public_openssh(key), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            tid, rel, size = line.split()
            server.expect(tid, rel, int(size))
            print("ok", flush=True)
        await server.close()

    asyncio.run(main())


def ours(server: OurServer, client_key: Path, src: Path, tid: str,
         limit: float | None = None) -> tuple[Sample, int]:
    from vmresize.agent.transfer import fastpath
    from vmresize.agent.transfer.client import send_disk

    assert server.proc is not None
    if server.path == "fast":  # self-tested once at the start of the run (run())
        assert fastpath.install()
    else:
        fastpath.uninstall()
    rel = f"bench/{tid}/disk.img"
    server.expect(tid, rel, src.stat().st_size)
    settle()
    c0, r0 = report.self_cpu(), report.proc_cpu(server.proc.pid)
    t0 = time.perf_counter()
    result = asyncio.run(send_disk(src=src, address="127.0.0.1", port=server.port,
                                   host_key=server.host_pub, client_key=client_key,
                                   transfer_id=tid, limit=limit))
    elapsed = time.perf_counter() - t0
    sample = Sample(elapsed, report.self_cpu() - c0, report.proc_cpu(server.proc.pid) - r0)
    dest = server.root / rel
    assert dest.stat().st_size == src.stat().st_size
    dest.unlink()
    return sample, result.bytes_sent


@contextlib.contextmanager
def workdir(arg: str | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vmresize-bench-", dir=arg))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


TOLERANCE = 0.10  # the bound: the transfer honours the limit within 10%


def bandwidth_rows(args: argparse.Namespace, server: OurServer, client_key: Path,
                   work: Path) -> list[dict[str, float | bool]]:
    """Ours under each of ``args.limits``: limit vs achieved rate."""
    rows: list[dict[str, float | bool]] = []
    for mibps in (float(x) for x in args.limits.split(",")):
        size = max(args.limit_size_mib, int(4 * mibps)) * MiB
        src = work / f"limited-{mibps:g}.img"
        with open(src, "wb") as f:
            f.write(os.urandom(size))
        got, _ = ours(server, client_key, src, f"limit-{mibps:g}", limit=mibps * MiB)
        achieved = size / got.wall / MiB
        within = abs(achieved - mibps) <= TOLERANCE * mibps
        rows.append({"limit_mib_per_s": mibps, "achieved_mib_per_s": achieved,
                     "wall_s": got.wall, "size_mib": size / MiB, "within_10pct": within,
                     "sender_cpu_s": got.sender_cpu, "receiver_cpu_s": got.receiver_cpu})
        print(f"limit {mibps:g} MiB/s: {size // MiB} MiB in {got.wall:.3f}s = "
              f"{achieved:.2f} MiB/s ({achieved / mibps:.1%} of the limit, "
              f"{'within' if within else 'NOT within'} 10%)", flush=True)
        src.unlink()
    return rows


def bandwidth_lines(rows: list[dict[str, float | bool]]) -> list[str]:
    lines = ["", "Bandwidth limit (ours, fast path; achieved = apparent size / wall time, "
             "handshake and verification included):", "",
             "| limit MiB/s | file MiB | wall s | achieved MiB/s | achieved/limit | within 10% |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['limit_mib_per_s']:g} | {r['size_mib']:g} | {r['wall_s']:.3f} | "
                     f"{r['achieved_mib_per_s']:.2f} | "
                     f"{r['achieved_mib_per_s'] / r['limit_mib_per_s']:.1%} | "
                     f"{'yes' if r['within_10pct'] else 'no'} |")
    return lines


def run_bandwidth(args: argparse.Namespace) -> None:
    """``--bandwidth-only``: just the limit rows."""
    load0 = report.loadavg()
    with workdir(args.workdir) as work:
        client_key = work / "client_key"
        client_pub = keygen(client_key)
        from vmresize.agent.transfer import fastpath_check
        state = asyncio.run(fastpath_check.enable(True))
        if not state.active:
            raise SystemExit(f"the fast path is not usable here: {state.message}")
        server = OurServer(work, client_pub, "fast")
        try:
            server.start()
            rows = bandwidth_rows(args, server, client_key, work)
        finally:
            server.stop()
    load1 = report.loadavg()
    lines = ["# Transfer under a bandwidth limit", "",
             f"loadavg before {load0}, after {load1}; cipher {CIPHER}.",
             *bandwidth_lines(rows)]
    doc: dict[str, object] = {"benchmark": "transfer-bandwidth", "cipher": CIPHER,
                              "loadavg_before": load0, "loadavg_after": load1,
                              "tolerance": TOLERANCE, "rows": rows}
    js, md = report.write("transfer-bandwidth", doc, "\n".join(lines))
    print(f"wrote {js.relative_to(REPO)} and {md.relative_to(REPO)}")


TOOLS = ("ours", "stock", "scp", "rsync")
KINDS = ("dense", "sparse")
TARGETS = {"dense": 1.2, "sparse": 5.0}  # DESIGN.md: ours vs the best of scp/rsync


def run(args: argparse.Namespace) -> None:
    size = args.size_mib * MiB
    load0 = report.loadavg()
    samples: dict[tuple[str, str], list[Sample]] = {}
    sent: dict[str, int] = {}
    with workdir(args.workdir) as work:
        client_key = work / "client_key"
        client_pub = keygen(client_key)
        dense, sparse = make_files(work, size)
        sshd = Sshd(work, client_pub) if Path(SSHD).exists() else None
        from vmresize.agent.transfer import fastpath_check
        state = asyncio.run(fastpath_check.enable(True))
        if not state.active:
            raise SystemExit(f"the fast path is not usable here: {state.message}")
        servers = {"ours": OurServer(work, client_pub, "fast"),
                   "stock": OurServer(work, client_pub, "stock")}
        dest = work / "scp-dest"
        dest.mkdir()
        try:
            for server in servers.values():
                server.start()
            if sshd is not None:
                sshd.start()
                opts = ssh_opts(work, sshd, client_key)
            else:
                print("sshd unavailable: only our numbers are printed")
            for i in range(args.repeat):
                for name, src in (("dense", dense), ("sparse", sparse)):
                    for tool, server in servers.items():
                        got, sent[name] = ours(server, client_key, src, f"{tool}-{name}-{i}")
                        samples.setdefault((tool, name), []).append(got)
                        print(f"run {i} {name}: {tool} {got.wall:.3f}s", flush=True)
                    if sshd is None:
                        continue
                    target = dest / src.name
                    got = timed(["scp", "-q", *opts, "-P", str(sshd.port), str(src),
                                 f"root@127.0.0.1:{target}"], sshd)
                    target.unlink()
                    samples.setdefault(("scp", name), []).append(got)
                    print(f"run {i} {name}: scp {got.wall:.3f}s", flush=True)
                    ssh_cmd = " ".join(["ssh", *opts, "-p", str(sshd.port)])
                    got = timed(["rsync", "--sparse", "-e", ssh_cmd, str(src),
                                 f"root@127.0.0.1:{target}"], sshd)
                    assert target.stat().st_size == size
                    target.unlink()
                    samples.setdefault(("rsync", name), []).append(got)
                    print(f"run {i} {name}: rsync {got.wall:.3f}s", flush=True)
            limited = bandwidth_rows(args, servers["ours"], client_key, work)
        finally:
            try:
                for server in servers.values():
                    server.stop()
            finally:
                if sshd is not None:
                    sshd.stop()
    summarize(args, size, samples, sent, load0, limited)


def summarize(args: argparse.Namespace, size: int,
              samples: dict[tuple[str, str], list[Sample]], sent: dict[str, int],
              load0: str, limited: list[dict[str, float | bool]]) -> None:
    """Print medians, spreads and ratios; write bench/results/transfer.{json,md}."""
    fsync = os.environ.get("BENCH_NO_FSYNC") != "1"
    load1 = report.loadavg()
    print(f"file size {size // MiB} MiB; median of {args.repeat} (min..max); "
          f"ours fsync={'on' if fsync else 'off'} (scp/rsync never fsync); "
          f"loadavg before {load0} after {load1}; "
          f"cpus {os.cpu_count()}")
    lines = ["# Transfer: ours (fast path), ours (asyncssh's own path) vs scp vs rsync --sparse",
             "",
             f"{size // MiB} MiB files (dense: random data; sparse: 64 MiB of data in 16 "
             f"extents); median of {args.repeat} interleaved runs; MB/s = apparent size / "
             f"median wall time; our receiver's fsync before it reports success "
             f"{'on' if fsync else 'off'} (scp and rsync never fsync: their writeback is not "
             f"timed, each run starts after a sync); cipher {CIPHER}; "
             f"loadavg before {load0}, after {load1}.", "",
             "| file | tool | median s | min s | max s | MB/s | sender CPU s | receiver CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    results: dict[str, object] = {}
    medians: dict[tuple[str, str], float] = {}
    for name in KINDS:
        print(f"{name}: ours sent {sent.get(name, 0) / MiB:.1f} MiB")
        for tool in TOOLS:
            got = samples.get((tool, name))
            if not got:
                continue
            walls = [s.wall for s in got]
            med = medians[(tool, name)] = statistics.median(walls)
            scpu = statistics.median(s.sender_cpu for s in got)
            rcpu = statistics.median(s.receiver_cpu for s in got)
            results[f"{tool}/{name}"] = {
                "wall_s": walls, "median_s": med, "min_s": min(walls), "max_s": max(walls),
                "mb_per_s": size / med / 1e6, "sender_cpu_s": scpu, "receiver_cpu_s": rcpu}
            print(f"  {tool:6s} {med:7.3f} s ({min(walls):.3f}..{max(walls):.3f})  "
                  f"{size / med / 1e6:8.1f} MB/s  cpu sender {scpu:.2f}s receiver {rcpu:.2f}s")
            lines.append(f"| {name} | {tool} | {med:.3f} | {min(walls):.3f} | "
                         f"{max(walls):.3f} | {size / med / 1e6:.0f} | {scpu:.2f} | "
                         f"{rcpu:.2f} |")
    lines += ["", "| file | scp/ours | rsync/ours | best/ours | target | met |",
              "|---|---|---|---|---|---|"]
    ratios: dict[str, float] = {}
    targets: dict[str, object] = {}
    for name in KINDS:
        if ("ours", name) not in medians:
            continue
        mine = medians[("ours", name)]
        row = []
        for tool in ("scp", "rsync"):
            if (tool, name) in medians:
                ratio = ratios[f"{tool}/{name}"] = medians[(tool, name)] / mine
                print(f"  ratio ours/{tool} ({name}) = {ratio:.2f}x")
                row.append(f"{ratio:.2f}x")
            else:
                row.append("-")
        others = [medians[(t, name)] for t in ("scp", "rsync") if (t, name) in medians]
        if others:
            best = ratios[f"best/{name}"] = min(others) / mine
            met = best >= TARGETS[name]
            targets[name] = {"target": TARGETS[name], "ratio": best, "met": met}
            print(f"  {name}: ours vs the best of scp/rsync = {best:.2f}x, target "
                  f">= {TARGETS[name]}x: {'met' if met else 'NOT met'}")
            lines.append(f"| {name} | {row[0]} | {row[1]} | {best:.2f}x | "
                         f">= {TARGETS[name]}x | {'yes' if met else 'no'} |")
    lines += ["", "asyncssh's own path (the fallback), same runs:", "",
              "| file | scp/stock | rsync/stock | fast path/stock | target | met |",
              "|---|---|---|---|---|---|"]
    for name in KINDS:
        if ("stock", name) not in medians:
            continue
        stock = medians[("stock", name)]
        cells = []
        for tool in ("scp", "rsync", "ours"):
            if (tool, name) in medians:
                ratio = ratios[f"{tool}/stock/{name}"] = medians[(tool, name)] / stock
                cells.append(f"{ratio:.2f}x")
            else:
                cells.append("-")
        if ("scp", name) in medians:
            ratio = ratios[f"scp/stock/{name}"]
            targets[f"stock/{name}"] = {"target": 1.0, "ratio": ratio, "met": ratio >= 1.0}
            print(f"  {name}: asyncssh's own path vs scp = {ratio:.2f}x, target >= 1.0x: "
                  f"{'met' if ratio >= 1.0 else 'NOT met'}")
            lines.append(f"| {name} | {cells[0]} | {cells[1]} | {cells[2]} | >= 1.0x (scp) | "
                         f"{'yes' if ratio >= 1.0 else 'no'} |")
    lines += bandwidth_lines(limited)
    doc: dict[str, object] = {
        "benchmark": "transfer", "file_mib": size // MiB, "repeat": args.repeat,
        "bandwidth": limited,
        "fsync": fsync, "cipher": CIPHER, "loadavg_before": load0, "loadavg_after": load1,
        "sent_mib": {k: v / MiB for k, v in sent.items()},
        "results": results, "ratios": ratios, "targets": targets}
    js, md = report.write("transfer", doc, "\n".join(lines))
    print(f"wrote {js.relative_to(REPO)} and {md.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None, help="parent of the temporary workdir")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--limits", default="8,32", help="MiB/s, comma-separated")
    parser.add_argument("--limit-size-mib", type=int, default=32)
    parser.add_argument("--bandwidth-only", action="store_true",
                        help="only the bandwidth limit rows")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
    elif args.bandwidth_only:
        run_bandwidth(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
