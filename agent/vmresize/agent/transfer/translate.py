"""asyncssh and OS errors of a transfer, translated into :mod:`vmresize.agent.errors`.

The one place that maps asyncssh's exception tree onto ours (callers ``raise ... from e``),
so nothing above the transfer package ever sees an ``asyncssh.Error``. Whether a retry can
help follows the failure: a refused key or host key never heals, a dropped connection may.
"""

from __future__ import annotations

import errno

import asyncssh

from vmresize.agent.errors import (
    AuthRejectedError,
    ConnectionLostError,
    HostKeyError,
    TransferError,
    TransferRefusedError,
)

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
        return AuthRejectedError(f"{context}: client key rejected by receiver")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return TransferRefusedError(f"{context}: channel refused: {exc.reason}")
    if isinstance(exc, asyncssh.KeyImportError):
        return HostKeyError(f"{context}: cannot parse key: {exc}")
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ConnectionLost | EOFError
                  | asyncssh.BreakReceived | asyncssh.SignalReceived | TimeoutError):
        return ConnectionLostError(f"{context}: connection lost: {exc}")
    if isinstance(exc, asyncssh.ChannelListenError | asyncssh.ProcessError):
        return TransferError(f"{context}: {exc}")
    if isinstance(exc, ConnectionError):
        return ConnectionLostError(f"{context}: {exc}")
    if isinstance(exc, OSError):
        transient = exc.errno in _TRANSIENT_ERRNOS
        if transient:
            return ConnectionLostError(f"{context}: {exc}")
        return TransferError(f"{context}: {exc}", retryable=False)
    return TransferError(f"{context}: {exc!r}")
