"""Which events open incidents, of which kind and priority."""

from __future__ import annotations

import itertools

import pytest

from bangpae.domain.errors import Invalid
from bangpae.domain.incidents import (
    FINAL,
    PRIORITIES,
    TRANSITIONS,
    advance,
    incident_kind,
    opens_incident,
    priority_of,
)
from bangpae.domain.model import Event, EventKind, Tier, make_event

EXPECTED: dict[EventKind, tuple[str, str | None]] = {
    EventKind.RETRO_BREACH: ("retro_breach", "critical"),
    EventKind.TAMPER: ("tamper", "critical"),
    EventKind.SOS: ("sos", "critical"),
    EventKind.DEVICE_CLONED: ("device_cloned", "critical"),
    EventKind.ZONE_ENTER: ("zone", "high"),
    EventKind.ZONE_EXIT: ("zone", None),
    EventKind.CURFEW_VIOLATION: ("curfew", "high"),
    EventKind.APPROACH_FAST: ("approach_fast", "high"),
    EventKind.DISCLOSURE_MISUSE: ("disclosure_misuse", "high"),
    EventKind.CASE_OPEN: ("device_integrity", "high"),
    EventKind.POWER_CUT: ("device_integrity", "high"),
    EventKind.POSITION_JUMP: ("position_jump", "high"),
    EventKind.LOW_BATTERY: ("low_battery", "normal"),
    EventKind.OFFLINE: ("offline", "normal"),
    EventKind.NO_FIX: ("no_fix", "normal"),
    EventKind.VICTIM_LOCATION_STALE: ("victim_location", None),
    EventKind.INCIDENT_ESCALATED: ("incident_escalated", None),
    EventKind.DISCLOSURE_DECIDED: ("disclosure_misuse", None),
    EventKind.SHOWN_TIER_CHANGED: ("shown_tier", None),
    EventKind.POSITION_IMPLAUSIBLE: ("victim_location", None),
    EventKind.FIX_REFUSED: ("fix_refused", "high"),
}


def event(kind: EventKind, **kw: object) -> Event:
    return make_event(kind, 1_795_000_000.0, 7, **kw)


@pytest.mark.parametrize("kind", [k for k in EventKind if k != EventKind.TIER_CHANGED])
def test_every_event_kind_has_its_incident_kind_and_priority(kind: EventKind) -> None:
    e = event(kind, order_id=7)
    assert (incident_kind(e), priority_of(e)) == EXPECTED[kind]
    assert opens_incident(e) is (EXPECTED[kind][1] is not None)


def tier_expectation(old: Tier, new: Tier) -> tuple[str, str | None]:
    if new == Tier.BREACH:
        return "breach", "critical"
    if new == Tier.UNCERTAIN:
        return "signal_lost", "critical"
    if old == Tier.UNCERTAIN:
        return "signal_lost", None
    if old == Tier.BREACH:
        return "breach", None
    return "proximity", None


@pytest.mark.parametrize(
    ("old", "new"), [(a, b) for a, b in itertools.product(Tier, Tier) if a != b]
)
def test_a_tier_change_opens_a_critical_incident_only_into_breach_or_uncertain(
    old: Tier, new: Tier
) -> None:
    e = event(EventKind.TIER_CHANGED, order_id=7, tier_from=old, tier_to=new)
    assert (incident_kind(e), priority_of(e)) == tier_expectation(old, new)


def test_priorities_are_the_three_of_the_contract() -> None:
    assert PRIORITIES == ("critical", "high", "normal")
    seen = {p for _, p in EXPECTED.values()} - {None}
    assert seen == set(PRIORITIES)


def test_an_incident_moves_forward_only_and_ends_in_a_final_status() -> None:
    assert advance("open", "dispatch") == "dispatched"
    assert advance("dispatched", "on_scene") == "on_scene"
    for status in ("open", "acknowledged", "dispatched", "on_scene"):
        assert advance(status, "resolve") in FINAL
        assert advance(status, "false_alarm") in FINAL
    for status in FINAL:
        for action in TRANSITIONS:
            with pytest.raises(Invalid, match="cannot"):
                advance(status, action)
    with pytest.raises(Invalid, match="cannot acknowledge an incident that is dispatched"):
        advance("dispatched", "acknowledge")


def test_an_unknown_action_is_refused_whatever_the_status() -> None:
    with pytest.raises(Invalid, match="unknown action 'reopen'"):
        advance("resolved", "reopen")
