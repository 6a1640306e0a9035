"""Tracker sessions: which connections speak for which tracker, and clones among them.

A GT06 or H02 tracker proves who it is by an identifier printed on it, so a
connection that logs in as a tracker may be anyone. Two rules follow
(docs/devices-and-commands.md argues them):

- **One fixed command.** A connection that is a tracker's only one is told the
  fixed reporting interval (:data:`~bangpae.domain.pursuit.TRACKER_INTERVAL_S`)
  right after its login; nothing else is ever sent to a tracker but the
  acknowledgements of its own frames.
- **Clones.** A second login for a tracker that is still connected starts an
  episode, and from then on no connection of that tracker is commanded. Each older
  connection is watched: one that speaks again more than ``grace_s`` after the newest
  login proves two live devices use one identity, and ``device_cloned`` is raised,
  once per episode, with both peers' addresses and times; both connections stay open
  and their fixes are stored. An older connection that stays silent for ``supersede_s``
  is the dead half of a reconnection (a mobile network dropped it without a word) and
  is closed; the newest is then told the fixed interval it was owed.

Every process that serves trackers reports to the one instance in the main process,
so a clone is seen whichever intake worker each connection landed on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from bangpae.domain.model import EventKind, make_event
from bangpae.domain.pursuit import TRACKER_INTERVAL_S
from bangpae.services.ingest import Ingest
from bangpae.services.ports import Clock, Registry

log = logging.getLogger(__name__)
# In-flight data: frames a device wrote on its old connection before it opened a new
# one can still arrive a few retransmissions later; they prove nothing.
GRACE_S = 10.0
# How long an older connection may stay silent before it counts as the dead half of a
# reconnection. Longer than the heartbeat interval of common firmware (3 to 5 minutes),
# shorter than the listeners' idle timeout (10 minutes).
SUPERSEDE_S = 300.0


class TrackerContext(Protocol):
    """What tracker sessions use of the application: its clock, the store and the writer."""

    @property
    def clock(self) -> Clock:
        """Where time comes from."""
        ...

    @property
    def store(self) -> Registry:
        """Where a device's person is read (``get_device``)."""
        ...

    @property
    def ingest(self) -> Ingest:
        """The single writer a clone's event is recorded by."""
        ...


class Link(Protocol):
    """One tracker connection, in this process or in an intake worker."""

    address: str  # the peer's address and port, as evidence

    def command(self, seconds: int) -> None:
        """Write the protocol's reporting-interval command."""
        ...

    def watch(self) -> None:
        """Report (:meth:`TrackerSessions.heard`) the next frame that arrives on it."""
        ...

    def drop(self) -> None:
        """Close the connection."""
        ...


@dataclass(eq=False)
class _Session:
    link: Link
    logged_in: float  # loop time
    logged_in_at: float  # clock time, for the evidence
    commanded: bool = False
    heard_at: float | None = None  # clock time it spoke after the newest login


@dataclass(eq=False)
class _Episode:
    started_at: float  # clock time of the second login
    newest: _Session
    raised: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass
class TrackerSessions:
    """The tracker connections of every listener, by device (main process only)."""

    ctx: TrackerContext
    grace_s: float = GRACE_S
    supersede_s: float = SUPERSEDE_S
    _sessions: dict[int, list[_Session]] = field(default_factory=dict)
    _episodes: dict[int, _Episode] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def connections(self, device_id: int) -> int:
        """How many connections speak for a device now."""
        return len(self._sessions.get(device_id, ()))

    def bind(self, device_id: int, link: Link) -> None:
        """A connection logged in as a device (its login already acknowledged)."""
        loop = asyncio.get_running_loop()
        new = _Session(link, loop.time(), self.ctx.clock.now())
        sessions = self._sessions.setdefault(device_id, [])
        sessions.append(new)
        if len(sessions) == 1:
            self._command(new)
            return
        ep = self._episodes.get(device_id)
        if ep is None:
            ep = self._episodes[device_id] = _Episode(new.logged_in_at, new)
            log.warning("tracker %d: a second connection from %s", device_id, link.address)
        ep.newest = new
        for s in sessions[:-1]:
            s.link.watch()
        if ep.timer is not None:
            ep.timer.cancel()
        ep.timer = loop.call_later(self.supersede_s, self._supersede, device_id, ep)

    def heard(self, device_id: int, link: Link) -> None:
        """A watched connection received a frame."""
        ep = self._episodes.get(device_id)
        s = self._find(device_id, link)
        if ep is None or s is None or s is ep.newest:
            return
        if asyncio.get_running_loop().time() < ep.newest.logged_in + self.grace_s:
            link.watch()  # may still be what it wrote before the newest login: ask again
            return
        s.heard_at = self.ctx.clock.now()
        if not ep.raised:
            ep.raised = True
            self._raise(device_id, ep)

    def unbind(self, device_id: int, link: Link) -> None:
        """A connection closed."""
        sessions = self._sessions.get(device_id, [])
        s = self._find(device_id, link)
        if s is None:
            return
        sessions.remove(s)
        if not sessions:
            del self._sessions[device_id]
        ep = self._episodes.get(device_id)
        if ep is None:
            return
        if len(sessions) > 1:
            if ep.newest is s:  # the others are judged against the newest still there
                ep.newest = max(sessions, key=lambda x: x.logged_in)
            return
        # the episode is over: one connection left, or none
        if ep.timer is not None:
            ep.timer.cancel()
        del self._episodes[device_id]
        if sessions and not ep.raised and not sessions[0].commanded:
            self._command(sessions[0])  # a reconnection: the interval it was owed

    def _find(self, device_id: int, link: Link) -> _Session | None:
        for s in self._sessions.get(device_id, ()):
            if s.link is link:
                return s
        return None

    def _command(self, s: _Session) -> None:
        s.commanded = True
        s.link.command(TRACKER_INTERVAL_S)

    def _supersede(self, device_id: int, ep: _Episode) -> None:
        """The older connections said nothing since the newest login: they are dead."""
        if self._episodes.get(device_id) is not ep or ep.raised:
            return  # over, or a clone: both stay, as evidence, and neither is commanded
        for s in list(self._sessions.get(device_id, ())):
            if s is not ep.newest:
                log.info("tracker %d: %s superseded by a newer login", device_id, s.link.address)
                s.link.drop()

    def _raise(self, device_id: int, ep: _Episode) -> None:
        sessions = sorted(self._sessions.get(device_id, ()), key=lambda s: s.logged_in)
        now = self.ctx.clock.now()
        data = {
            "episode_started_at": ep.started_at,
            "connections": [
                {"peer": s.link.address, "logged_in_at": s.logged_in_at, "heard_at": s.heard_at}
                for s in sessions
            ],
        }
        log.error(
            "tracker %d: two live connections (%s): cloned device",
            device_id,
            ", ".join(s.link.address for s in sessions),
        )
        task = asyncio.get_running_loop().create_task(self._record(device_id, ep, now, data))
        self._tasks.add(task)
        task.add_done_callback(self._recorded)

    async def _record(self, device_id: int, ep: _Episode, now: float, data: dict[str, Any]) -> None:
        device = await asyncio.to_thread(self.ctx.store.get_device, device_id)
        person = device.person_id if device is not None else None
        event = make_event(
            EventKind.DEVICE_CLONED,
            now,
            device_id,
            ep.started_at,  # one event per episode
            person_id=person,
            device_id=device_id,
            data=data | {"identifier": device.identifier if device is not None else None},
        )
        await self.ctx.ingest.record(event)

    def _recorded(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a cloned device failed", exc_info=task.exception())
