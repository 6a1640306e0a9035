"""Tracker sessions: who is commanded, watched and closed as connections come and go.

The connections here only record what the sessions ask of them; raising the
incident of a clone, through the store, is tests/integration/test_cloned_tracker.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

from bangpae.adapters.clock import ManualClock
from bangpae.services.trackers import TrackerSessions


@dataclass(eq=False)
class Conn:
    address: str
    asked: list[str] = field(default_factory=list)

    def command(self, seconds: int) -> None:
        self.asked.append(f"command {seconds}")

    def watch(self) -> None:
        self.asked.append("watch")

    def drop(self) -> None:
        self.asked.append("drop")


def sessions(grace_s: float = 0.0, supersede_s: float = 0.05) -> TrackerSessions:
    return TrackerSessions(SimpleNamespace(clock=ManualClock(0.0)), grace_s, supersede_s)


async def test_a_lone_connection_is_told_the_fixed_interval_once() -> None:
    t = sessions()
    a = Conn("a")
    t.bind(7, a)
    assert a.asked == ["command 15"]
    t.unbind(7, a)
    assert t.connections(7) == 0


async def test_a_reconnection_closes_the_silent_older_connection_and_owes_the_newer_one() -> None:
    t = sessions()
    old, new = Conn("old"), Conn("new")
    t.bind(7, old)
    t.bind(7, new)
    assert new.asked == [] and old.asked == ["command 15", "watch"]
    await asyncio.sleep(0.1)  # past supersede_s
    assert old.asked[-1] == "drop" and new.asked == []
    t.unbind(7, old)  # the closed connection goes
    assert new.asked == ["command 15"]


async def test_what_arrives_within_the_grace_proves_nothing_and_is_watched_again() -> None:
    t = sessions(grace_s=60.0, supersede_s=0.05)
    old, new = Conn("old"), Conn("new")
    t.bind(7, old)
    t.bind(7, new)
    t.heard(7, old)  # in flight before the newer login, say
    assert old.asked == ["command 15", "watch", "watch"]
    await asyncio.sleep(0.1)
    assert old.asked[-1] == "drop"


async def test_with_three_connections_the_newest_left_is_the_one_kept() -> None:
    t = sessions(supersede_s=0.1)
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    for conn in (a, b, c):
        t.bind(7, conn)
    t.unbind(7, c)  # the newest goes: b is now the newest
    await asyncio.sleep(0.2)
    assert a.asked[-1] == "drop" and "drop" not in b.asked
    t.unbind(7, a)
    assert b.asked[-1] == "command 15" and t.connections(7) == 1


async def test_connections_of_other_trackers_are_apart() -> None:
    t = sessions()
    a, b = Conn("a"), Conn("b")
    t.bind(7, a)
    t.bind(8, b)
    assert a.asked == ["command 15"] and b.asked == ["command 15"]
