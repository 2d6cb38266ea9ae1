"""SSH keys of the migration service: the per-host host key and the shared client key.

The host key is generated on the host on first start (ed25519), written atomically with mode
0600, and published (``public_openssh``) in ``Host.status.hostKey``; senders pin it. The
migration client key is one keypair shared by all agents, mounted from a Secret; this module
only reads it and never logs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from vmresize.agent.errors import HostKeyError, TransferError

__all__ = [
    "HOST_KEY_FILE", "generate_key", "load_client_key", "load_or_create_host_key",
    "parse_public_key", "public_openssh",
]

HOST_KEY_FILE = "ssh_host_ed25519_key"


def generate_key(comment: str = "vmresize") -> asyncssh.SSHKey:
    """A fresh in-memory ed25519 private key."""
    return asyncssh.generate_private_key("ssh-ed25519", comment=comment)


def _write_private_atomic(path: Path, key: asyncssh.SSHKey) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key.export_private_key("openssh"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a key another process wrote meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    public = path.with_name(path.name + ".pub")
    public.write_text(public_openssh(key) + "\n")


def load_or_create_host_key(state_dir: Path) -> asyncssh.SSHKey:
    """Load ``state_dir/ssh_host_ed25519_key``, generating it (ed25519, 0600) if missing;
    TransferError if it cannot be read."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / HOST_KEY_FILE
    if not path.exists():
        _write_private_atomic(path, generate_key(comment="vmresize-host"))
    try:
        return asyncssh.read_private_key(path)
    except (asyncssh.KeyImportError, OSError) as e:
        raise TransferError(f"cannot load host key {path}: {e}") from e


def load_client_key(path: Path) -> asyncssh.SSHKey:
    """Load the shared migration client private key (OpenSSH or PKCS#8 format); TransferError
    if it cannot be read."""
    try:
        return asyncssh.read_private_key(path)
    except (asyncssh.KeyImportError, OSError) as e:
        raise TransferError(f"cannot load migration client key {path}: {e}") from e


def public_openssh(key: asyncssh.SSHKey) -> str:
    """The public half of ``key`` as one OpenSSH line (``ssh-ed25519 AAAA... comment``)."""
    return key.export_public_key("openssh").decode("ascii").strip()


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """Parse one OpenSSH public key line; raise :class:`HostKeyError` if it is not one."""
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError) as e:
        raise HostKeyError(f"not an OpenSSH public key: {e}") from e
