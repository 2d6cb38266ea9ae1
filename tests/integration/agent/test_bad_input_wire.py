"""Bad input on the migration service: hostile frames and SSH requests, table-driven.

A real asyncssh migration server on 127.0.0.1 (the ``xfer_server`` fixture) and a raw client
that writes frames of :mod:`vmresize.agent.transfer.protocol` by hand. Each case asserts the
exact refusal (the ERROR frame's code and a message fragment, or the SSH request refused),
that the channel is closed, that nothing but the registered transfer's own bookkeeping
exists under the storage root and no disk was committed, and that the same server still
serves a good transfer afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from tests.support.checksum import reference_disk_checksum

from vmresize.agent.transfer.client import send_disk
from vmresize.agent.transfer.protocol import (
    DATA,
    DONE,
    ERROR,
    HEADER,
    HELLO,
    MAX_CONTROL,
    PROTOCOL_VERSION,
    RESULT,
    STATE,
    SUBSYSTEM,
)
from vmresize.agent.transfer.server import MigrationServer

from .conftest import XferKeys, xfer_make_file

pytestmark = pytest.mark.asyncio(loop_scope="session")

DISK = "instances/ns/vm/abcd1234/disk.qcow2"
SIZE = 4096
BODY = bytes(range(256)) * (SIZE // 256)
SHA = reference_disk_checksum(BODY)
#: Bookkeeping of a registered transfer: the sidecar, and the partial once HELLO opened it.
SIDECAR, PARTIAL = DISK + ".xfer", DISK + ".partial"
WAIT = 20.0  # seconds; a refusal is immediate, this only bounds a hang


def hdr(kind: int, offset: int, length: int) -> bytes:
    return HEADER.pack(kind, offset, length)


def ctl(kind: int, payload: bytes | dict[str, Any] | list[Any] | int) -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return hdr(kind, 0, len(body)) + body


def hello(tid: Any = "t-1", size: Any = SIZE, version: Any = PROTOCOL_VERSION) -> bytes:
    return ctl(HELLO, {"version": version, "transfer_id": tid, "size": size})


def data(offset: int, payload: bytes) -> bytes:
    return hdr(DATA, offset, len(payload)) + payload


def done(sha: Any = SHA) -> bytes:
    return ctl(DONE, {"sha256": sha})


GOOD = hello() + data(0, BODY)


@dataclass
class Wire:
    """Raw client side of one subsystem channel: collects the receiver's frames."""

    buf: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    eof: asyncio.Event = field(default_factory=asyncio.Event)

    def session(self) -> asyncssh.SSHClientSession[bytes]:
        wire = self

        class Session(asyncssh.SSHClientSession[bytes]):
            def data_received(self, chunk: bytes, datatype: asyncssh.DataType) -> None:
                wire.buf += chunk

            def eof_received(self) -> bool:
                wire.eof.set()  # the receiver answers our EOF with its own
                return False

            def connection_lost(self, exc: Exception | None) -> None:
                wire.closed.set()

        return Session()

    def frames(self) -> list[tuple[int, dict[str, Any]]]:
        out, view = [], bytes(self.buf)
        while len(view) >= HEADER.size:
            kind, _, length = HEADER.unpack(view[:HEADER.size])
            out.append((kind, json.loads(view[HEADER.size:HEADER.size + length])))
            view = view[HEADER.size + length:]
        return out


async def connect(server: MigrationServer, keys: XferKeys,
                  **kw: Any) -> asyncssh.SSHClientConnection:
    known = asyncssh.import_known_hosts(f"[127.0.0.1]:{server.port} {keys.host_pub}\n")
    return await asyncssh.connect("127.0.0.1", server.port, known_hosts=known,
                                  client_keys=kw.pop("client_keys", [keys.client]),
                                  username="probe", config=[], agent_path=None, **kw)


async def exchange(server: MigrationServer, keys: XferKeys, chunks: list[bytes],
                   *, eof: bool = False) -> Wire:
    """Open the subsystem, write each chunk (a separate SSH packet), wait for the close."""
    wire = Wire()
    async with await connect(server, keys) as conn:
        chan, _ = await conn.create_session(wire.session, subsystem=SUBSYSTEM, encoding=None)
        for chunk in chunks:
            chan.write(chunk)
            await asyncio.sleep(0.05)  # let the receiver act on it before the next one
        if eof:
            chan.write_eof()
            await asyncio.wait_for(wire.eof.wait(), WAIT)
            chan.close()
        await asyncio.wait_for(wire.closed.wait(), WAIT)
    return wire


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# (id, how the transfer is registered, chunks, receiver frame kinds, error code, fragment)
# Registration: "exact" = expect(t-1, DISK, SIZE); "bound" = at most 2*SIZE; "none".
ERR = "error"
FRAMES: list[tuple[str, str, list[bytes], list[int], str | None, str]] = [
    ("data-before-hello", "exact", [data(0, BODY)], [ERROR], ERR, "DATA before HELLO"),
    ("done-before-hello", "exact", [done()], [ERROR], ERR, "DONE before HELLO"),
    ("unknown-frame-kind", "exact", [hdr(0x7F, 0, 0)], [ERROR], ERR, "unexpected frame kind 127"),
    ("frame-kind-zero", "exact", [hdr(0, 0, 0)], [ERROR], ERR, "unexpected frame kind 0"),
    ("sender-sends-state", "exact", [ctl(STATE, {"have": []})], [ERROR], ERR, "kind 2"),
    ("sender-sends-result", "exact", [ctl(RESULT, {"ok": True})], [ERROR], ERR, "kind 5"),
    ("sender-sends-error", "exact", [ctl(ERROR, {"code": "x"})], [ERROR], ERR, "kind 6"),
    ("oversized-control-frame", "exact", [hdr(HELLO, 0, MAX_CONTROL + 1)], [ERROR], ERR,
     f"length {MAX_CONTROL + 1}"),
    ("negative-length-control", "exact", [hdr(HELLO, 0, 2**32 - 1)], [ERROR], ERR,
     f"length {2**32 - 1}"),
    ("non-utf8-json", "exact", [ctl(HELLO, b'{"version": "\xff\xfe"}')], [ERROR], ERR,
     "can't decode"),
    ("not-json", "exact", [ctl(HELLO, b"HELLO t-1 4096")], [ERROR], ERR, "Expecting value"),
    ("json-array", "exact", [ctl(HELLO, [1, "t-1", SIZE])], [ERROR], ERR, "a JSON object"),
    ("json-number", "exact", [ctl(HELLO, 42)], [ERROR], ERR, "a JSON object"),
    ("hello-wrong-version", "exact", [hello(version=1)], [ERROR], "refused",
     "unsupported protocol version 1"),  # 1: a sender from before the disk checksum
    # 2: a sender whose disk checksum is over sha256: the refusal says what this one speaks
    ("hello-sha256-version", "exact", [hello(version=2)], [ERROR], "refused",
     "unsupported protocol version 2: this receiver speaks 3 (disk checksum xxh3-128)"),
    ("hello-no-version", "exact", [ctl(HELLO, {"transfer_id": "t-1", "size": SIZE})], [ERROR],
     "refused", "unsupported protocol version None"),
    ("tid-never-registered", "exact", [hello("never-expected")], [ERROR], "refused",
     "unknown transfer id 'never-expected'"),
    ("tid-path-traversal", "exact", [hello("../../etc/passwd")], [ERROR], "refused",
     "unknown transfer id '../../etc/passwd'"),
    ("tid-nul-byte", "exact", [hello("t-1\x00")], [ERROR], "refused", "unknown transfer id"),
    ("tid-not-a-string", "exact", [hello({"id": "t-1"})], [ERROR], "refused",
     "transfer_id must be a string"),
    ("nothing-registered", "none", [hello()], [ERROR], "refused", "unknown transfer id 't-1'"),
    ("size-mismatch", "exact", [hello(size=SIZE + 1)], [ERROR], "refused",
     f"size {SIZE + 1} != expected {SIZE}"),
    ("size-negative", "exact", [hello(size=-1)], [ERROR], "refused", "non-negative integer"),
    ("size-a-string", "exact", [hello(size=str(SIZE))], [ERROR], "refused",
     "non-negative integer, not '4096'"),
    ("size-a-float", "exact", [hello(size=float(SIZE))], [ERROR], "refused",
     "non-negative integer, not 4096.0"),
    ("size-a-bool", "exact", [hello(size=True)], [ERROR], "refused", "not True"),
    ("size-over-the-bound", "bound", [hello(size=2 * SIZE + 1)], [ERROR], "refused",
     f"exceeds the {2 * SIZE} bytes expected"),
    ("hello-twice", "exact", [hello(), hello()], [STATE, ERROR], ERR, "HELLO sent twice"),
    ("data-offset-beyond-size", "exact", [hello(), data(SIZE, b"x")], [STATE, ERROR], ERR,
     f"beyond size {SIZE}"),
    ("data-straddles-the-end", "exact", [hello(), data(SIZE - 1, b"xy")], [STATE, ERROR], ERR,
     "beyond size"),
    ("data-offset-wraps", "exact", [hello(), hdr(DATA, 2**64 - 1, 1) + b"x"], [STATE, ERROR],
     ERR, "beyond size"),
    ("data-negative-length", "exact", [hello(), hdr(DATA, 0, 2**32 - 1)], [STATE, ERROR], ERR,
     "beyond size"),
    ("done-wrong-checksum", "exact", [GOOD, done("0" * 64)], [STATE, ERROR],
     "checksum-mismatch", "differs from the sender's"),
    ("done-without-checksum", "exact", [GOOD, ctl(DONE, {})], [STATE, ERROR],
     "checksum-mismatch", "differs"),
    ("done-not-an-object", "exact", [GOOD, ctl(DONE, [SHA])], [STATE, ERROR], ERR,
     "a JSON object"),
    ("garbage-after-done", "exact", [GOOD + done() + b"\x07garbage" * 8], [STATE, ERROR], ERR,
     "bytes after DONE"),
    ("data-after-done", "exact", [GOOD + done() + data(0, b"late")], [STATE, ERROR], ERR,
     "bytes after DONE"),
    ("eof-mid-header", "exact", [hello(), hdr(DATA, 0, 8)[:5]], [STATE], None, ""),
]


async def register(server: MigrationServer, how: str) -> None:
    if how == "exact":
        server.expect("t-1", DISK, SIZE)
    elif how == "bound":
        server.expect("t-1", DISK, 2 * SIZE, at_most=True)


async def good_transfer_still_works(server: MigrationServer, keys: XferKeys, root: Path,
                                    tmp_path: Path) -> None:
    src = xfer_make_file(tmp_path / "good.img", 2 * SIZE, {0: 2 * SIZE})
    server.expect("t-good", "instances/ns/good/0000/disk.qcow2", 2 * SIZE)
    result = await send_disk(src=src, address="127.0.0.1", port=server.port,
                             host_key=keys.host_pub, client_key=keys.client,
                             transfer_id="t-good")
    assert (root / "instances/ns/good/0000/disk.qcow2").read_bytes() == src.read_bytes()
    assert result.size_bytes == 2 * SIZE


@pytest.mark.parametrize(("how", "chunks", "kinds", "code", "fragment"),
                         [c[1:] for c in FRAMES], ids=[c[0] for c in FRAMES])
async def test_hostile_frames_are_refused(xfer_server: MigrationServer, xfer_keys: XferKeys,
                                          xfer_root: Path, tmp_path: Path, how: str,
                                          chunks: list[bytes], kinds: list[int],
                                          code: str | None, fragment: str) -> None:
    await register(xfer_server, how)
    before = tree(xfer_root)
    wire = await exchange(xfer_server, xfer_keys, chunks, eof=code is None)
    frames = wire.frames()
    assert [k for k, _ in frames] == kinds, frames
    if code is not None:
        error = frames[-1][1]
        assert error["code"] == code, error
        assert fragment in error["message"], error
    # Nothing committed; only the registered transfer's own sidecar (and its partial, once
    # a HELLO was accepted) exist; a refused HELLO creates nothing at all.
    after = tree(xfer_root)
    assert DISK not in after
    allowed = before | ({PARTIAL} if STATE in kinds else set())
    assert after <= allowed, after - allowed
    if how == "none":
        assert after == set()
    status = xfer_server.status("t-1")
    assert status is None or not status.complete
    await good_transfer_still_works(xfer_server, xfer_keys, xfer_root, tmp_path)


async def test_size_mismatch_on_resume_is_refused(xfer_server: MigrationServer,
                                                  xfer_keys: XferKeys, xfer_root: Path,
                                                  tmp_path: Path) -> None:
    """The first HELLO fixes an at-most size; a resume that declares another is refused."""
    xfer_server.expect("t-1", DISK, 2 * SIZE, at_most=True)
    first = await exchange(xfer_server, xfer_keys, [hello(size=SIZE), data(0, BODY[:100])],
                           eof=True)
    assert [k for k, _ in first.frames()] == [STATE]
    again = await exchange(xfer_server, xfer_keys, [hello(size=SIZE // 2)])
    assert again.frames()[-1][1]["code"] == "refused"
    assert f"size {SIZE // 2} != expected {SIZE}" in again.frames()[-1][1]["message"]
    assert DISK not in tree(xfer_root)
    await good_transfer_still_works(xfer_server, xfer_keys, xfer_root, tmp_path)


# --- SSH requests other than the one subsystem ------------------------------------------

Probe = Callable[[asyncssh.SSHClientConnection], Awaitable[object]]
SSH_REQUESTS: list[tuple[str, Probe, type[Exception]]] = [
    ("exec-id", lambda c: c.run("id"), asyncssh.ChannelOpenError),
    ("exec-scp-sink", lambda c: c.run("scp -t /tmp"), asyncssh.ChannelOpenError),
    ("exec-rm", lambda c: c.run("rm -rf /"), asyncssh.ChannelOpenError),
    ("shell", lambda c: c.create_process(), asyncssh.ChannelOpenError),
    ("pty-with-subsystem", lambda c: c.create_process(subsystem=SUBSYSTEM, term_type="xterm"),
     asyncssh.ChannelOpenError),
    ("pty-with-shell", lambda c: c.create_process(term_type="vt100"), asyncssh.ChannelOpenError),
    ("sftp", lambda c: c.start_sftp_client(), asyncssh.ChannelOpenError),
    ("subsystem-sftp-by-name", lambda c: c.create_process(subsystem="sftp"),
     asyncssh.ChannelOpenError),
    ("subsystem-lookalike", lambda c: c.create_process(subsystem=SUBSYSTEM + "/../sftp"),
     asyncssh.ChannelOpenError),
    ("local-port-forward", lambda c: c.open_connection("127.0.0.1", 22),
     asyncssh.ChannelOpenError),
    ("remote-port-forward", lambda c: c.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 9),
     asyncssh.ChannelListenError),
    ("unix-socket-forward", lambda c: c.open_unix_connection("/var/run/libvirt/libvirt-sock"),
     asyncssh.ChannelOpenError),
    ("remote-unix-forward", lambda c: c.forward_remote_path("/tmp/vmresize-fwd", "/tmp/x"),
     asyncssh.ChannelListenError),
]


@pytest.mark.parametrize(("probe", "refusal"), [c[1:] for c in SSH_REQUESTS],
                         ids=[c[0] for c in SSH_REQUESTS])
async def test_ssh_requests_beyond_the_subsystem_are_refused(
        xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_root: Path, tmp_path: Path,
        probe: Probe, refusal: type[Exception]) -> None:
    async with await connect(xfer_server, xfer_keys) as conn:
        with pytest.raises(refusal):
            await asyncio.wait_for(probe(conn), WAIT)
        # The connection survives a refused request and still carries the subsystem.
        chan, _ = await conn.create_session(Wire().session, subsystem=SUBSYSTEM,
                                            encoding=None)
        chan.close()
    assert tree(xfer_root) == set()
    await good_transfer_still_works(xfer_server, xfer_keys, xfer_root, tmp_path)


AUTH: list[tuple[str, dict[str, Any]]] = [
    ("unknown-client-key", {"client_keys": "stranger"}),
    ("password", {"client_keys": [], "password": "hunter2", "preferred_auth": "password"}),
    ("keyboard-interactive", {"client_keys": [], "password": "x",
                              "preferred_auth": "keyboard-interactive"}),
    ("no-credentials", {"client_keys": [], "preferred_auth": "none"}),
]


@pytest.mark.parametrize("options", [c[1] for c in AUTH], ids=[c[0] for c in AUTH])
async def test_other_authentication_is_refused(xfer_server: MigrationServer,
                                               xfer_keys: XferKeys, xfer_root: Path,
                                               options: dict[str, Any]) -> None:
    opts = dict(options)
    if opts.get("client_keys") == "stranger":
        opts["client_keys"] = [xfer_keys.stranger]
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncio.wait_for(connect(xfer_server, xfer_keys, **opts), WAIT)
    assert tree(xfer_root) == set()


async def test_a_second_session_for_a_transfer_supersedes_the_first(
        xfer_server: MigrationServer, xfer_keys: XferKeys, xfer_root: Path) -> None:
    """A second subsystem channel claiming the same transfer takes it over (a reconnecting
    sender); the first channel is dropped and can write nothing more."""
    xfer_server.expect("t-1", DISK, SIZE)
    first, second = Wire(), Wire()
    async with await connect(xfer_server, xfer_keys) as conn:
        a, _ = await conn.create_session(first.session, subsystem=SUBSYSTEM, encoding=None)
        a.write(hello() + data(0, b"\xee" * 100))
        await asyncio.sleep(0.2)
        b, _ = await conn.create_session(second.session, subsystem=SUBSYSTEM, encoding=None)
        b.write(hello())
        await asyncio.wait_for(first.closed.wait(), WAIT)
        b.write(data(0, BODY) + done())
        await asyncio.wait_for(second.closed.wait(), WAIT)
    assert [k for k, _ in first.frames()] == [STATE]
    assert [k for k, _ in second.frames()] == [STATE, RESULT]
    assert (xfer_root / DISK).read_bytes() == BODY
