"""The HTTP listeners' connections: uvicorn's protocol, within a budget and deadlines.

uvicorn closes a keep-alive connection that stays idle between requests, but waits
as long as it takes for a request head or body to arrive: connections that send a
request line and nothing more are held until the client gives up, each holding a
file descriptor. Here every connection is first admitted by its listener's budget
(:mod:`bangpae.adapters.listeners.budget`), then must deliver each request head
within ``header_timeout_s`` of its first byte (of connecting, for the first one) and
the body within ``body_timeout_s`` of the head; a WebSocket takes its connection's
place in the budget with it, and is held to its own pings from then on.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from bangpae.adapters.listeners.budget import ConnectionBudget


class GuardedHttp(HttpToolsProtocol):
    """One HTTP connection: admitted by the budget, closed when a request stalls."""

    budget: ClassVar[ConnectionBudget]
    header_timeout_s: ClassVar[float]
    body_timeout_s: ClassVar[float]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.budget_key: str | None = None  # None: refused, or handed to a WebSocket
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection, or close it at once; the head is due from now."""
        super().connection_made(transport)
        host = self.client[0] if self.client else "?"
        self.budget_key = self.budget.admit(host, self.loop.time())
        if self.budget_key is None:
            transport.close()
            return
        self._arm("header", self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        """Bytes of a request; the first after a response starts the next head's clock."""
        if self.budget_key is None:
            return
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm("header", self.header_timeout_s)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The head is in: the body is due next."""
        self._disarm()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._arm("body", self.body_timeout_s)

    def on_message_complete(self) -> None:
        """The whole request is in: no deadline while the application answers."""
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        """The WebSocket protocol takes the connection over, and its place in the budget."""
        self._disarm()
        key, self.budget_key = self.budget_key, None
        super().handle_websocket_upgrade()
        ws = self.transport.get_protocol()
        if isinstance(ws, GuardedWebSocket):
            ws.budget_key = key
        elif key is not None:  # not ours to watch: it leaves the budget now
            self.budget.release(key)

    def timeout_keep_alive_handler(self) -> None:
        """Idle between requests for too long (uvicorn's keep-alive timeout)."""
        if not self.transport.is_closing():
            self.budget.expired("idle")
        super().timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the budget."""
        self._disarm()
        if self.budget_key is not None:
            self.budget.release(self.budget_key)
            self.budget_key = None
        super().connection_lost(exc)

    def _arm(self, reason: str, timeout_s: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._expire, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.budget.expired(reason)
            self.transport.close()


class GuardedWebSocket(WebSocketsSansIOProtocol):
    """A WebSocket upgraded from a :class:`GuardedHttp` connection: leaves its budget."""

    budget: ClassVar[ConnectionBudget]
    budget_key: str | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the budget."""
        try:
            super().connection_lost(exc)
        finally:
            if self.budget_key is not None:
                self.budget.release(self.budget_key)
                self.budget_key = None


def guarded_protocols(
    budget: ConnectionBudget, header_timeout_s: float, body_timeout_s: float
) -> tuple[type[GuardedHttp], type[GuardedWebSocket]]:
    """The HTTP and WebSocket protocol classes of one listener (for ``uvicorn.Config``)."""
    listener_budget, header_s, body_s = budget, header_timeout_s, body_timeout_s

    class Http(GuardedHttp):
        budget = listener_budget
        header_timeout_s = header_s
        body_timeout_s = body_s

    class WebSocket(GuardedWebSocket):
        budget = listener_budget

    return Http, WebSocket
