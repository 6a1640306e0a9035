"""The event loop bangpae's processes run on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (uvicorn[standard]), else asyncio's loop.

    The device listeners spend most of their time in the event loop itself (a read, a
    wake-up, a write per fix), which uvloop runs in C.
    """
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)
