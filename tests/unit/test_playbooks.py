"""Playbooks are data: steps per profile and incident kind, shown as a checklist."""

from __future__ import annotations

import pytest

from bangpae.domain.incidents import incident_kind, priority_of
from bangpae.domain.model import Event, EventKind, Tier, make_event
from bangpae.domain.playbooks import (
    PLAYBOOKS,
    PRE_ALERT,
    PROFILES,
    checklist,
    done_steps,
    incident_checklist,
    playbook,
    profile_incident,
)
from bangpae.domain.response import next_page_at, response_times

KINDS = ("breach", "sos", "tamper", "zone", "signal_lost", "low_battery", PRE_ALERT)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_profile_has_steps_for_every_kind_each_told_in_korean_and_english(
    profile: str, kind: str
) -> None:
    book = playbook(profile, kind)
    assert book.steps, (profile, kind)
    ids = [s.id for s in book.steps]
    assert len(ids) == len(set(ids)), "step ids are unique within a playbook"
    for step in book.steps:
        assert step.title.ko and step.title.en
        for party, text in step.told:
            assert party in step.contacts, f"{step.id} tells {party} without contacting them"
            assert text.ko and text.en
            assert any("\uac00" <= ch <= "\ud7a3" for ch in text.ko), "Korean text is Hangul"


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        playbook("us", "breach")


def test_kr_breach_goes_to_police_and_a_field_officer() -> None:
    contacts = {p for s in playbook("kr", "breach").steps for p in s.contacts}
    assert {"police", "officer"} <= contacts


def test_fr_pre_alert_calls_the_offender_and_withholds_it_from_the_victim() -> None:
    steps = playbook("fr", PRE_ALERT).steps
    assert [s.id for s in steps if s.contacts] == ["call_offender"]
    assert any("victim" in s.withheld for s in steps)
    assert all(s.told_to("victim") is None for s in steps)


def test_fr_alert_tells_the_victim_and_the_police() -> None:
    told = {p for s in playbook("fr", "breach").steps for p, _ in s.told}
    assert {"victim", "police"} <= told


@pytest.mark.parametrize("kind", ["breach", "zone"])
def test_es_calls_the_victim_then_the_offender_then_the_police(kind: str) -> None:
    calls = [s.contacts[0] for s in playbook("es", kind).steps if s.contacts]
    assert calls == ["victim", "offender", "police"]


def test_a_checklist_marks_done_steps_and_names_the_next_one() -> None:
    c = checklist("es", "breach", {"call_victim"})
    assert [i.done for i in c.items] == [True, False, False]
    assert c.next_step is not None and c.next_step.id == "call_offender"
    assert not c.complete
    told = c.told("victim")
    assert len(told) == 1 and "protection zone" in told[0].en
    assert c.told("police") == []  # not yet: that step is not done
    assert len(c.told("police", done_only=False)) == 1
    body = c.as_dict()
    assert body["next_step"] == "call_offender" and body["steps"][0]["done"] is True
    assert set(body["steps"][0]["told"]["victim"]) == {"ko", "en"}


def test_lifecycle_actions_complete_the_steps_they_stand_for() -> None:
    timeline = [
        {"at": 1.0, "action": "event", "data": {}},
        {"at": 2.0, "action": "step", "data": {"step": "review"}},
        {"at": 3.0, "action": "dispatch", "data": {"officer_id": 9}},
        {"at": 4.0, "action": "handoff", "data": {"handoff_id": 1}},
    ]
    assert done_steps("kr", "breach", timeline) == {"review", "dispatch_officer", "notify_police"}
    c = incident_checklist("kr", "breach", timeline)
    assert c.next_step is not None and c.next_step.id == "call_victim"


def test_a_step_marked_from_another_playbook_does_not_count() -> None:
    timeline = [{"at": 1.0, "action": "step", "data": {"step": "check_compliance"}}]
    assert done_steps("kr", "breach", timeline) == frozenset()


def test_playbooks_cover_exactly_the_three_profiles() -> None:
    assert set(PLAYBOOKS) == set(PROFILES) == {"kr", "fr", "es"}


def test_response_times_count_from_opening_and_any_hands_on_action_acknowledges() -> None:
    timeline = [
        {"at": 100.0, "action": "event"},
        {"at": 130.0, "action": "escalated"},
        {"at": 145.0, "action": "dispatch"},
        {"at": 400.0, "action": "on_scene"},
    ]
    assert response_times(100.0, timeline) == {
        "to_acknowledge_s": 45.0,
        "to_dispatch_s": 45.0,
        "to_on_scene_s": 300.0,
    }
    assert response_times(100.0, timeline[:2]) == {
        "to_acknowledge_s": None,
        "to_dispatch_s": None,
        "to_on_scene_s": None,
    }


def test_the_supervisor_is_paged_sixty_seconds_after_opening_then_every_sixty() -> None:
    assert next_page_at(1000.0, None) == 1060.0
    assert next_page_at(1000.0, 1060.4) == pytest.approx(1120.4)
    # a service back after an outage pages once, then on the regular interval
    assert next_page_at(1000.0, None, after_s=30, every_s=10) == 1030.0


def _tier_change(old: Tier, new: Tier) -> Event:
    return make_event(
        EventKind.TIER_CHANGED, 1_800_000_000.0, 7, order_id=7, tier_from=old, tier_to=new
    )


@pytest.mark.parametrize(
    ("profile", "old", "new", "expected"),
    [
        ("fr", Tier.CLEAR, Tier.NOTIFY, ("pre_alert", "high")),
        ("fr", Tier.CLEAR, Tier.REVEAL, ("pre_alert", "high")),
        ("fr", Tier.NOTIFY, Tier.CLEAR, ("pre_alert", None)),
        ("fr", Tier.NOTIFY, Tier.BREACH, ("breach", "critical")),
        ("kr", Tier.CLEAR, Tier.NOTIFY, ("proximity", None)),
        ("es", Tier.CLEAR, Tier.NOTIFY, ("proximity", None)),
    ],
)
def test_only_fr_opens_an_incident_when_he_enters_the_pre_alert_zone(
    profile: str, old: Tier, new: Tier, expected: tuple[str, str | None]
) -> None:
    e = _tier_change(old, new)
    assert profile_incident(profile, e, incident_kind(e), priority_of(e)) == expected
