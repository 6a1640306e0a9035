"""What the TCP listener needs of a tracker protocol: one object per protocol, pure.

A protocol module (``gt06``, ``h02``) keeps its framing, decoding, acknowledgements
and its one command together, and offers them as a :class:`TcpProtocol`; the listener
finds it by name in :data:`bangpae.protocols.registry.TCP_PROTOCOLS` and has no branch
of its own for any protocol.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from bangpae.domain.model import Fix


class Decoded(NamedTuple):
    """What a listener needs from one frame, whatever the protocol (a tuple: made per fix)."""

    identifier: str | None
    fix: Fix | None  # of the device the caller named (0 before the connection is bound)
    reply: bytes | None  # the acknowledgement the frame is owed, if any


class TcpProtocol(Protocol):
    """A tracker protocol over TCP: bytes in, decoded frames and replies out."""

    @property
    def name(self) -> str:
        """The protocol's name (its listener, metrics and settings are named after it)."""
        ...

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        """Cut a stream into whole frames; return them and the incomplete rest."""
        ...

    def decode(
        self, frame: bytes, now: float, lenient: bool = False, device_id: int = 0
    ) -> Decoded:
        """One frame: who it names, the fix it carries for ``device_id`` and its reply.

        ``lenient``: the device's firmware is known to send wrong checksums. FrameError
        for a frame that is malformed or dated too far ahead.
        """
        ...

    def interval(self, identifier: str, seconds: int, now: float) -> bytes:
        """The command setting the device's reporting interval."""
        ...
