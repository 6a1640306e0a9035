"""The HTTP listeners' deadlines against slow clients, on a real uvicorn server.

Each attack here is one a plain uvicorn server lets hold its connection (and its
descriptor) for as long as the client likes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn

from bangpae.adapters.listeners.budget import ConnectionBudget
from bangpae.adapters.listeners.http_guard import guarded_protocols

from .trackers import until

HEADER_S = 0.5
BODY_S = 0.5
IDLE_S = 5  # uvicorn's keep-alive default: longer than the deadlines tested
SAFETY_S = 10.0  # a generous bound: the machine is shared
REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200; a WebSocket is accepted and echoed."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (msg := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": msg.get("text") or ""})
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, ConnectionBudget]]:
    budget = ConnectionBudget("api", max_connections=50, max_per_address=50)
    http, ws = guarded_protocols(budget, HEADER_S, BODY_S)
    server = _Server(
        uvicorn.Config(
            _app,
            host="127.0.0.1",
            port=0,
            http=http,
            ws=ws,
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=IDLE_S,
            proxy_headers=False,
        )
    )
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, SAFETY_S)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield port, budget
    server.should_exit = True
    await task


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent until it closed the connection (fails if it did not)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_a_request_line_and_nothing_more_is_closed_at_the_header_timeout(
    served: tuple[int, ConnectionBudget],
) -> None:
    port, budget = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\n")
    assert await _closed_within(reader, SAFETY_S) == b""
    writer.close()
    assert budget.timed_out["header"] == 1


async def test_a_head_sent_a_byte_at_a_time_is_still_closed_at_the_header_timeout(
    served: tuple[int, ConnectionBudget],
) -> None:
    port, budget = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with contextlib.suppress(ConnectionError):
        for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 1000:  # never the blank line
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
            if reader.at_eof() or loop.time() - start > SAFETY_S:
                break
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.001) == b"":
                    break
    assert budget.timed_out["header"] == 1
    writer.close()


async def test_a_body_that_stops_coming_is_dropped_at_the_body_timeout(
    served: tuple[int, ConnectionBudget],
) -> None:
    port, budget = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly some")
    assert await _closed_within(reader, SAFETY_S) == b""
    writer.close()
    assert budget.timed_out == {"header": 0, "body": 1, "idle": 0, "login": 0}


async def test_a_kept_alive_connection_that_starts_a_request_and_stalls_is_closed(
    served: tuple[int, ConnectionBudget],
) -> None:
    port, budget = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(2) == b"ok"
    writer.write(REQUEST)  # a second request on the same connection is served
    await reader.readuntil(b"\r\n\r\n")
    assert await reader.readexactly(2) == b"ok"
    writer.write(b"GET / HTTP/1.1\r\n")  # the first byte stops the keep-alive timer
    assert await _closed_within(reader, IDLE_S - 1) == b""  # the header deadline came first
    writer.close()
    assert budget.timed_out["header"] == 1 and budget.open == 0


async def test_a_websocket_keeps_its_place_in_the_budget_past_the_deadlines_until_it_closes(
    served: tuple[int, ConnectionBudget],
) -> None:
    import websockets

    port, budget = served
    async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        await asyncio.sleep(HEADER_S + BODY_S + 0.5)
        await ws.send("still here")
        assert await ws.recv() == "still here"
        assert budget.open == 1
    await until(lambda: budget.open == 0, SAFETY_S)
    assert sum(budget.timed_out.values()) == 0


async def test_connections_over_the_cap_are_closed_at_once_and_the_rest_are_served(
    served: tuple[int, ConnectionBudget],
) -> None:
    port, budget = served
    budget.max_per_address = 3
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _closed_within(reader, SAFETY_S) == b""  # the fourth: closed unanswered
    writer.close()
    assert budget.refused["per_address"] == 1
    r, w = held[0]
    w.write(REQUEST)
    assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    for _, w in held:
        w.close()
