"""A transfer fast path that is broken the way a library release can break it.

:func:`break_it` makes the fast path's AES-GCM object misbehave: ``raises`` as
cryptography 51's ``AESGCM.encrypt_into`` did for the in-place encryption of before
(``ValueError('data and buf must not overlap')``), ``corrupts`` by flipping one bit of what
it encrypts (a silent change of behaviour). An agent process started with
``AgentProcess(prelude=BREAK_IN_AGENT)`` has it broken the first way before its startup
self-test runs. Only the fast path's own object is wrapped: asyncssh's path keeps
the real library.
"""

from __future__ import annotations

from typing import Any

from vmresize.agent.transfer import fastpath

_real_aead = fastpath._aead


class _Broken:
    def __init__(self, aead: Any, mode: str) -> None:
        self._aead, self._mode = aead, mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aead, name)

    def encrypt_into(self, nonce: bytes, data: Any, aad: Any, buf: Any) -> int:
        if self._mode == "raises":
            raise ValueError("data and buf must not overlap")
        n: int = self._aead.encrypt_into(nonce, data, aad, buf)
        buf[0] ^= 1
        return n

    def encrypt(self, nonce: bytes, data: Any, aad: Any) -> bytes:
        sealed: bytes = self._aead.encrypt(nonce, data, aad)
        if self._mode == "raises":
            return sealed
        return bytes([sealed[0] ^ 1]) + sealed[1:]


def break_it(mode: str) -> None:
    """Break the fast path in this process (``raises`` or ``corrupts``)."""
    fastpath._aead = lambda cipher: _Broken(_real_aead(cipher), mode)  # type: ignore[assignment]


BREAK_IN_AGENT = "from tests.support.broken_fastpath import break_it; break_it('raises')"


def mend() -> None:
    """Undo :func:`break_it`."""
    fastpath._aead = _real_aead
