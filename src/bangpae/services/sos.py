"""Her SOS loop: what has actually happened to her call for help, as it happens.

The rules are in docs/sos.md: the states an SOS goes through as she is shown them,
what "I am safe" (cancel) does, what her duress PIN does instead, and how her PINs are
kept. She is told what was done, never who did it or where anyone is.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bangpae.domain.disclosure import iso
from bangpae.domain.incidents import IncidentRecord
from bangpae.services.access import actor
from bangpae.services.auth import Principal, hash_password, verify_password
from bangpae.services.ports import IncidentTimeline

LOOP_WINDOW_S = 24 * 3600.0  # a closed SOS stays in her list this long
# Timeline actions -> the state she is shown; the first entry of each state counts.
STATE_OF = {
    "acknowledge": "seen",
    "dispatch": "officer_assigned",
    "on_scene": "officer_on_scene",
    "handoff": "police_informed",
    "resolve": "closed",
    "false_alarm": "closed",
}
CANCEL = "victim_cancel"
DURESS = "duress"
# where her duress PIN raised an SOS from: the app lock, a cancel, her settings
DURESS_SOURCES = ("app_lock", "cancel", "settings", "contact")
PIN = re.compile(r"^[0-9]{4,8}$")
PIN_FAILURES = 5  # wrong PINs per person within PIN_WINDOW_S before refusing (429)
PIN_WINDOW_S = 300.0


class SosRecords(IncidentTimeline, Protocol):
    """What her SOS loop reads and records in the store (``adapters.store.incidents``)."""

    def sos_incidents(self, person_id: int, closed_since: float) -> list[IncidentRecord]:
        """A person's SOS incidents still open or closed since then, newest first, with
        their timelines (her SOS loop, docs/sos.md)."""
        ...

    def incident_duress(
        self, incident_id: int, actor: str, at: float, note: str, data: dict[str, Any]
    ) -> None:
        """Mark an open incident as under duress (docs/sos.md): critical, shown as such,
        and a ``duress`` entry on its timeline."""
        ...

    def watch_incidents(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(incident_id)`` after every commit that moved an incident: an
        operator's action, a timeline entry, a hand-off, or an SOS opened or joined."""
        ...


def _silent(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether the SOS was sent silent (her choice when she sent it, nothing later)."""
    for e in entries:
        if e["action"] == "event" and isinstance(e["data"], dict):
            alarm = (e["data"].get("data") or {}).get("alarm")
            if alarm is not None:
                return bool(alarm == "sos_silent")
    return False


def _eta_min(dispatch: dict[str, Any], now: float) -> int | None:
    """Minutes until the officer is expected, from the ETA the dispatch recorded."""
    eta_s = (dispatch.get("data") or {}).get("eta_s")
    if not isinstance(eta_s, int | float) or not math.isfinite(eta_s):
        return None
    left = float(dispatch.get("eta_from", dispatch["at"])) + float(eta_s) - now
    return max(1, math.ceil(left / 60.0))  # not there yet until the officer says so


def _raised_by_duress(record: IncidentRecord) -> bool:
    """Whether the event that opened the incident was her duress PIN's silent SOS.

    Known from the opening event itself, so the SOS is hidden from the moment it is
    committed, before its ``duress`` entry is added: her live link reads as soon as the
    store says it moved (docs/sos.md).
    """
    for e in record.timeline:
        if e["action"] == "event" and isinstance(e["data"], dict):
            source = (e["data"].get("data") or {}).get("source")
            return e["at"] == record.opened_at and source in DURESS_SOURCES  # it opened it
    return False


def _by_duress(e: dict[str, Any]) -> bool:
    """Whether a timeline entry is the event of an SOS her duress PIN raised."""
    if e["action"] != "event" or not isinstance(e["data"], dict):
        return False
    return (e["data"].get("data") or {}).get("source") in DURESS_SOURCES


def _start(record: IncidentRecord) -> int | None:
    """Where her phone's view of this SOS starts in its timeline (None: not shown).

    An SOS her duress PIN raised is never shown, until she presses SOS herself while it
    is open: her press joins it, and she is shown it from that press on, so that her
    call is seen to be received while the earlier duress stays hidden (docs/sos.md).
    """
    raised = _raised_by_duress(record) or any(
        e["action"] == DURESS and isinstance(e["data"], dict) and e["data"].get("raised")
        for e in record.timeline
    )
    if not raised:
        return 0
    for i, e in enumerate(record.timeline):
        if e["action"] == "event" and e["note"] == "sos" and not _by_duress(e):
            return i
    return None


def shown_since(record: IncidentRecord) -> float | None:
    """Since when her phone may know of this SOS and what was done for it (None: not at
    all): from its opening, or for one her duress PIN raised, from her own press on it."""
    start = _start(record)
    if start is None:
        return None
    return float(record.opened_at if start == 0 else record.timeline[start]["at"])


def hidden(record: IncidentRecord) -> bool:
    """Whether her phone must not know of this SOS: her duress PIN raised it and she has
    not pressed SOS on it since. Her routes then answer for it as for an SOS that is not
    hers (404), so that trying ids cannot find it (docs/sos.md)."""
    return _start(record) is None


def sos_view(record: IncidentRecord, now: float) -> dict[str, Any] | None:
    """One SOS incident as she is shown it (None: not shown to her).

    An SOS her duress PIN raised is not shown on her phone (whoever made her give it is
    looking) until she presses SOS on it herself, and then as if it began with her press
    (docs/sos.md).
    """
    start = _start(record)
    if start is None:
        return None
    entries = record.timeline[start:]
    since = record.opened_at if start == 0 else entries[0]["at"]
    steps = [{"state": "received", "at": iso(since)}]
    seen = {"received"}
    cancelled = False
    dispatch: dict[str, Any] | None = None
    # What the operators did for the hidden SOS before her press is shown as done at her
    # press: a new SOS would be seen and given an officer as soon, and her screen must not
    # sit at "received" only because the help was under way already (docs/sos.md).
    before = [
        {**e, "at": since, "eta_from": e["at"]}
        for e in record.timeline[:start]
        if STATE_OF.get(e["action"]) not in (None, "closed")
    ]
    for e in [*before, *entries]:
        action = e["action"]
        if action == DURESS:
            data = e["data"] or {}
            # a duress cancel of this SOS looks like a cancel; a raise that joined it
            # (``raised`` present: from the lock, or a cancel of another, closed SOS)
            # leaves it as it was
            cancelled = cancelled or (data.get("source") == "cancel" and "raised" not in data)
            continue
        if action == CANCEL:
            cancelled = True
            continue
        if action == "event" and e["note"] == "sos" and cancelled:
            # she pressed SOS again after saying she was safe: a new call for help, shown
            # from its receipt on (it joined the incident still open for the operator)
            cancelled = False
            seen = {"received"}
            steps.append({"state": "received", "at": iso(e["at"])})
            continue
        state = STATE_OF.get(action)
        if state is None or state in seen:
            continue
        if cancelled and state != "closed":
            # after her cancel only its closing is shown: after a duress cancel the
            # operators send an officer, after a real one they call her, and whoever made
            # her cancel is watching this screen (docs/sos.md)
            continue
        seen.add(state)
        steps.append({"state": state, "at": iso(e["at"])})
        if action == "dispatch":
            dispatch = e
    state = steps[-1]["state"]
    return {
        "id": record.id,
        "at": iso(since),
        "silent": _silent(entries),
        "state": state,
        "steps": steps,
        "eta_min": _eta_min(dispatch, now)
        if dispatch is not None and state == "officer_assigned"
        else None,
        "cancelled": cancelled,
    }


def victim_sos(store: SosRecords, who: Principal, now: float) -> list[dict[str, Any]]:
    """Her SOS incidents still open or closed within the last 24 h, newest first.

    Her own data, read by her: not audited (no one else's position is in it).
    """
    if who.person_id is None:
        return []
    out = []
    for record in store.sos_incidents(who.person_id, now - LOOP_WINDOW_S):
        view = sos_view(record, now)
        if view is not None:
            out.append(view)
    return out


def latest_sos(store: SosRecords, person_id: int, since: float) -> IncidentRecord | None:
    """Her open SOS incident that an SOS sent at ``since`` opened or joined (None: none)."""
    for record in store.sos_incidents(person_id, since):
        if record.status not in ("resolved", "false_alarm"):
            return record
    return None


def raised_at(record: IncidentRecord, at: float) -> bool:
    """Whether an SOS event joined this incident at ``at`` or later (a press was heard)."""
    return any(e["action"] == "event" and e["at"] >= at for e in record.timeline)


def cancel(
    store: SosRecords, who: Principal, record: IncidentRecord, duress: bool, now: float
) -> None:
    """She says she is safe; with her duress PIN, the operators learn the opposite.

    Either way the incident stays open for an operator to verify; what she is answered
    and shown is the same (docs/sos.md).
    """
    if duress:
        store.incident_duress(
            record.id,
            actor(who),
            now,
            "under duress: she cancelled with her duress PIN; do not call back",
            {"source": "cancel", "silent": True},
        )
    else:
        store.add_incident_entry(
            record.id, CANCEL, actor(who), now, "she says she is safe: verify", {}
        )


# -- PINs ------------------------------------------------------------------------------------


def pin_hashes(app_pin: str | None, duress_pin: str | None) -> tuple[str | None, str | None]:
    """The argon2 hashes to keep (slow: run in the password pool)."""
    return (
        None if app_pin is None else hash_password(app_pin),
        None if duress_pin is None else hash_password(duress_pin),
    )


def check_pin(app_hash: str | None, duress_hash: str | None, pin: str) -> str:
    """``app``, ``duress`` or ``wrong`` (slow: run in the password pool)."""
    # both checked every time: the answer takes as long whichever PIN she gave
    duress = verify_password(duress_hash, pin)
    app = verify_password(app_hash, pin)
    return "duress" if duress else "app" if app else "wrong"


# -- waking her streams ----------------------------------------------------------------------


class SosWatch:
    """Wakes her open streams when one of her SOS incidents moves (within a moment).

    The store tells it which incident moved, from whatever thread committed; it finds
    whose SOS that is (once per incident) and calls her streams on the event loop.
    """

    def __init__(self, store: SosRecords) -> None:
        self.store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: dict[int, set[Callable[[], None]]] = {}
        self._person_of: dict[int, int | None] = {}  # incident -> her person (None: not SOS)
        store.watch_incidents(self.moved)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop her streams run on."""
        self._loop = loop

    def listen(self, person_id: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the loop whenever one of her SOS incidents moves."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._listeners.setdefault(person_id, set()).add(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        """Stop calling a callback."""
        for person in list(self._listeners):
            self._listeners[person].discard(callback)
            if not self._listeners[person]:
                del self._listeners[person]

    def moved(self, incident_id: int) -> None:
        """An incident moved (called by the store after its commit, from any thread)."""
        if not self._listeners or self._loop is None:
            return
        if incident_id not in self._person_of:
            record = self.store.get_incident(incident_id)
            if record is None:
                return
            if len(self._person_of) > 100_000:  # bounded: forget the oldest
                self._person_of.pop(next(iter(self._person_of)))
            self._person_of[incident_id] = record.person_id if record.kind == "sos" else None
        person = self._person_of[incident_id]
        if person is not None and person in self._listeners:
            self._loop.call_soon_threadsafe(self._wake, person)

    def _wake(self, person_id: int) -> None:
        for callback in list(self._listeners.get(person_id, ())):
            callback()
