"""On-demand benchmark (not a test): our send_disk vs OpenSSH scp and rsync --sparse.

Usage::

    .venv/bin/python bench/transfer.py [--workdir DIR] [--repeat N] [--size-mib 1024]

Builds a 1 GiB dense file and a 1 GiB file holding 64 MiB of data, then times, in one run:

* ours   ``send_disk`` to a migration server running in a separate Python process
         (aes128-gcm, sparse-aware, end-to-end sha256 verified, fsync before rename);
* scp    ``scp -c aes128-gcm@openssh.com`` to a throwaway ``sshd`` started here;
* rsync  ``rsync --sparse`` over the same ``ssh -c aes128-gcm@openssh.com``.

Everything listens on 127.0.0.1 only, keys are generated for the run, every process this
script starts is stopped by its PID, and the workdir is removed at the end. Source files are
read from the page cache for every tool alike. Ratios are printed as ours/other *throughput*
(> 1 means ours is faster), from the best of ``--repeat`` runs of each tool, with the load
average before and after (the numbers mean little on a busy machine).

Diagnostic: ``BENCH_NO_FSYNC=1`` makes our receiver skip the fsync before the rename (scp
and rsync do not fsync either); the default measures the durable path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

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


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


class OurServer:
    """The migration server in its own process (as on a real destination host)."""

    def __init__(self, work: Path, client_pub: str) -> None:
        self.root = work / "ours-root"
        self.root.mkdir()
        self.client_pub = client_pub
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.host_pub = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.root), self.client_pub],
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


def serve(root: str, client_pub: str) -> None:
    """Child process: run a MigrationServer; register transfers read from stdin."""
    from vmresize.agent.transfer import session
    from vmresize.agent.transfer.keys import generate_key, public_openssh
    from vmresize.agent.transfer.server import start_migration_server

    if os.environ.get("BENCH_NO_FSYNC") == "1":  # diagnostic only: do what scp does
        def commit(fd: int, partial: Path, final: Path) -> None:
            os.rename(partial, final)
        session.commit = commit  # type: ignore[assignment]

    async def main() -> None:
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


def ours(server: OurServer, client_key: Path, src: Path, tid: str) -> tuple[float, int]:
    from vmresize.agent.transfer.client import send_disk

    rel = f"bench/{tid}/disk.img"
    server.expect(tid, rel, src.stat().st_size)
    t0 = time.perf_counter()
    result = asyncio.run(send_disk(src=src, address="127.0.0.1", port=server.port,
                                   host_key=server.host_pub, client_key=client_key,
                                   transfer_id=tid))
    elapsed = time.perf_counter() - t0
    dest = server.root / rel
    assert dest.stat().st_size == src.stat().st_size
    dest.unlink()
    return elapsed, result.bytes_sent


@contextlib.contextmanager
def workdir(arg: str | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vmresize-bench-", dir=arg))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(args: argparse.Namespace) -> None:
    size = args.size_mib * MiB
    load0 = loadavg()
    with workdir(args.workdir) as work:
        client_key = work / "client_key"
        client_pub = keygen(client_key)
        dense, sparse = make_files(work, size)
        have_sshd = Path(SSHD).exists()
        sshd = Sshd(work, client_pub) if have_sshd else None
        server = OurServer(work, client_pub)
        dest = work / "scp-dest"
        dest.mkdir()
        try:
            server.start()
            if sshd is not None:
                sshd.start()
                opts = ssh_opts(work, sshd, client_key)
            else:
                print("sshd unavailable: only our numbers are printed")
            best: dict[tuple[str, str], float] = {}
            sent: dict[str, int] = {}
            for i in range(args.repeat):
                for name, src in (("dense", dense), ("sparse", sparse)):
                    t, n = ours(server, client_key, src, f"{name}-{i}")
                    best[("ours", name)] = min(best.get(("ours", name), 1e9), t)
                    print(f"run {i} {name}: ours {t:.3f}s", flush=True)
                    sent[name] = n
                    if sshd is None:
                        continue
                    target = dest / src.name
                    t = timed(["scp", "-q", *opts, "-P", str(sshd.port), str(src),
                               f"root@127.0.0.1:{target}"])
                    target.unlink()
                    best[("scp", name)] = min(best.get(("scp", name), 1e9), t)
                    print(f"run {i} {name}: scp {t:.3f}s", flush=True)
                    ssh_cmd = " ".join(["ssh", *opts, "-p", str(sshd.port)])
                    t = timed(["rsync", "--sparse", "-e", ssh_cmd, str(src),
                               f"root@127.0.0.1:{target}"])
                    assert target.stat().st_size == size
                    target.unlink()
                    best[("rsync", name)] = min(best.get(("rsync", name), 1e9), t)
                    print(f"run {i} {name}: rsync {t:.3f}s", flush=True)
        finally:
            try:
                server.stop()
            finally:
                if sshd is not None:
                    sshd.stop()
        print(f"file size {size // MiB} MiB; best of {args.repeat}; "
              f"throughput = apparent size / wall time; "
              f"fsync={'off' if os.environ.get('BENCH_NO_FSYNC') == '1' else 'on'}; "
              f"loadavg before {load0} after {loadavg()}; cpus {os.cpu_count()}")
        for name in ("dense", "sparse"):
            print(f"{name}: ours sent {sent[name] / MiB:.1f} MiB")
            for tool in ("ours", "scp", "rsync"):
                if (tool, name) in best:
                    t = best[(tool, name)]
                    print(f"  {tool:6s} {t:7.3f} s  {size / t / 1e6:8.1f} MB/s")
            for tool in ("scp", "rsync"):
                if (tool, name) in best:
                    ratio = best[(tool, name)] / best[("ours", name)]
                    print(f"  ratio ours/{tool} ({name}) = {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None, help="parent of the temporary workdir")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
    else:
        run(args)


if __name__ == "__main__":
    main()
