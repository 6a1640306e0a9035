"""Every tracker protocol served over TCP, by name: a new protocol is one more entry here."""

from __future__ import annotations

from collections.abc import Mapping

from bangpae.protocols import gt06, h02
from bangpae.protocols.codec import TcpProtocol

TCP_PROTOCOLS: Mapping[str, TcpProtocol] = {p.name: p for p in (gt06.TCP, h02.TCP)}
