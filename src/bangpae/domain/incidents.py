"""Which events open (or join) an incident, of which kind, at which priority."""

from __future__ import annotations

from bangpae.domain.model import Event, EventKind, Tier

CRITICAL, HIGH, NORMAL = "critical", "high", "normal"

_BY_KIND: dict[EventKind, tuple[str, str]] = {
    EventKind.RETRO_BREACH: ("retro_breach", CRITICAL),
    EventKind.TAMPER: ("tamper", CRITICAL),
    EventKind.SOS: ("sos", CRITICAL),
    EventKind.ZONE_ENTER: ("zone", HIGH),
    EventKind.CURFEW_VIOLATION: ("curfew", HIGH),
    EventKind.APPROACH_FAST: ("approach_fast", HIGH),
    EventKind.DISCLOSURE_MISUSE: ("disclosure_misuse", HIGH),
    EventKind.CASE_OPEN: ("device_integrity", HIGH),
    EventKind.POWER_CUT: ("device_integrity", HIGH),
    EventKind.POSITION_JUMP: ("position_jump", HIGH),
    EventKind.LOW_BATTERY: ("low_battery", NORMAL),
    EventKind.OFFLINE: ("offline", NORMAL),
    EventKind.NO_FIX: ("no_fix", NORMAL),
}


def _classify(event: Event) -> tuple[str, str] | None:
    if event.kind == EventKind.TIER_CHANGED:
        if event.tier_to == Tier.BREACH:
            return ("breach", CRITICAL)
        if event.tier_to == Tier.UNCERTAIN:
            return ("signal_lost", CRITICAL)
        return None
    return _BY_KIND.get(event.kind)


def incident_kind(event: Event) -> str | None:
    """The incident an event belongs to (one open incident per order and kind), or None."""
    c = _classify(event)
    return None if c is None else c[0]


def priority_of(event: Event) -> str | None:
    """``critical``, ``high`` or ``normal``; None when the event needs no incident."""
    c = _classify(event)
    return None if c is None else c[1]
