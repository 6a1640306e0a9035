"""Response timing, pure: how long an incident waited for each step, and when to page;
and the records of pages and hand-offs as the store keeps them.

Times are POSIX seconds; callers pass ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Any of these shows a person took the incident in hand: an operator may dispatch
# or close without a separate acknowledgement.
ACKNOWLEDGING = ("acknowledge", "dispatch", "on_scene", "resolve", "false_alarm")
ESCALATE_AFTER_S = 60.0
PAGE_EVERY_S = 60.0


def _first(timeline: Sequence[Mapping[str, Any]], actions: Sequence[str]) -> float | None:
    times = [float(e["at"]) for e in timeline if e.get("action") in actions]
    return min(times) if times else None


def response_times(
    opened_at: float, timeline: Sequence[Mapping[str, Any]]
) -> dict[str, float | None]:
    """Seconds from opening to acknowledgement, dispatch and arrival (None: not yet)."""

    def since(t: float | None) -> float | None:
        return None if t is None else round(max(t - opened_at, 0.0), 3)

    return {
        "to_acknowledge_s": since(_first(timeline, ACKNOWLEDGING)),
        "to_dispatch_s": since(_first(timeline, ("dispatch",))),
        "to_on_scene_s": since(_first(timeline, ("on_scene",))),
    }


def next_page_at(
    opened_at: float,
    last_page_at: float | None,
    after_s: float = ESCALATE_AFTER_S,
    every_s: float = PAGE_EVERY_S,
) -> float:
    """When an unacknowledged incident next pages the supervisor.

    First ``after_s`` after it opened, then ``every_s`` after the previous page (a
    service that was down pages once on return, not once per missed interval).
    """
    return opened_at + after_s if last_page_at is None else last_page_at + every_s


@dataclass(frozen=True, slots=True)
class Unacknowledged:
    """An open incident nobody has taken in hand, and how often the supervisor was paged."""

    id: int
    kind: str
    priority: str
    order_id: int | None
    person_id: int | None
    opened_at: float
    pages: int
    last_page_at: float | None


@dataclass(frozen=True, slots=True)
class HandoffAttempt:
    """One delivery attempt of a hand-off."""

    attempt: int
    at: float
    status: str
    http_status: int | None
    error: str


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """A case handed to the police, with its delivery attempts (oldest first)."""

    id: int
    incident_id: int
    channel: str
    status: str
    note: str
    summary: dict[str, Any]
    created_at: float
    created_by: str
    closed_at: float | None
    closed_by: str | None
    attempts: tuple[HandoffAttempt, ...] = ()

    @property
    def open(self) -> bool:
        """Whether the hand-off (and so its live-position link) is still open."""
        return self.closed_at is None
