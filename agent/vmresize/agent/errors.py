"""Typed errors of the disk-transfer boundary (SSH server, client, paths, keys).

asyncssh and OS errors are translated here, at the adapter boundary, into this small tree
and chained with ``raise ... from e`` so nothing above the transfer modules ever sees an
``asyncssh.Error``. Every error says whether retrying the same step can help
(``retryable``), in the spirit of kopf's ``TemporaryError``/``PermanentError``.

Tree::

    TransferError                       retryable per instance (default False)
    ├── PathEscape                      a path would leave the storage root      (permanent)
    ├── HostKeyError                    pinned host key mismatch / bad key text  (permanent)
    ├── AuthRejected                    our client key was refused               (permanent)
    ├── TransferRefused                 receiver refused the transfer            (permanent)
    ├── ChecksumMismatch                end-to-end sha256 differs                (retryable)
    └── ConnectionLost                  network/SSH failure mid-transfer         (retryable)
"""

from __future__ import annotations

import errno

import asyncssh


class TransferError(Exception):
    """Base of all disk-transfer errors; ``retryable`` says whether a retry can help."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class PathEscape(TransferError):  # noqa: N818 - the name is the public contract
    """A relative path is absolute, contains ``..``/NUL, or resolves outside the root."""


class HostKeyError(TransferError):
    """The receiver's host key does not match the pinned one (or the pin is malformed)."""


class AuthRejected(TransferError):  # noqa: N818 - reads better than AuthRejectedError
    """The receiver refused our client key."""


class TransferRefused(TransferError):  # noqa: N818
    """The receiver refused the transfer (unknown id, size mismatch, bad request)."""


class ChecksumMismatch(TransferError):  # noqa: N818
    """The receiver's sha256 of what it wrote differs from the source's."""

    retryable = True


class ConnectionLost(TransferError):  # noqa: N818
    """The SSH connection failed or dropped; resuming from the receiver's state can help."""

    retryable = True


# OS errors that describe a transient condition of the network or the peer.
_TRANSIENT_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
    errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN,
})


def translate(exc: BaseException, *, context: str) -> TransferError:
    """Map an asyncssh/OS error to a :class:`TransferError` (caller does ``raise ... from``)."""
    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyError(f"{context}: receiver host key does not match the pinned key")
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthRejected(f"{context}: client key rejected by receiver")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return TransferRefused(f"{context}: channel refused: {exc.reason}")
    if isinstance(exc, asyncssh.KeyImportError):
        return HostKeyError(f"{context}: cannot parse key: {exc}")
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ConnectionLost | EOFError
                  | asyncssh.BreakReceived | asyncssh.SignalReceived | TimeoutError):
        return ConnectionLost(f"{context}: connection lost: {exc}")
    if isinstance(exc, asyncssh.ChannelListenError | asyncssh.ProcessError):
        return TransferError(f"{context}: {exc}")
    if isinstance(exc, ConnectionError):
        return ConnectionLost(f"{context}: {exc}")
    if isinstance(exc, OSError):
        transient = exc.errno in _TRANSIENT_ERRNOS
        if transient:
            return ConnectionLost(f"{context}: {exc}")
        return TransferError(f"{context}: {exc}", retryable=False)
    return TransferError(f"{context}: {exc!r}")
