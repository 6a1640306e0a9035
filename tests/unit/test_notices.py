"""What victims and staff are told: the pure rules of bangpae.domain.notices."""

from __future__ import annotations

import re

import pytest

from bangpae.domain import notices
from bangpae.domain.model import Event, EventKind, Order, Tier, make_event
from bangpae.domain.notices import TEXTS, due, service_notices, staff_notices, victim_notices

T = 1_800_000_000.0
ORDER = Order(7, offender_id=1, victim_id=2)


def change(
    a: Tier,
    b: Tier,
    order: Order = ORDER,
    at: float = T,
    kind: EventKind = EventKind.SHOWN_TIER_CHANGED,
) -> Event:
    return make_event(
        kind,
        at,
        order.id,
        a,
        b,
        order_id=order.id,
        person_id=order.offender_id,
        tier_from=a,
        tier_to=b,
    )


def test_she_is_never_told_of_the_exact_tier_only_of_what_she_is_shown() -> None:
    # the exact tier's moments would trace the radii around him (docs/disclosure.md)
    for a, b in ((Tier.CLEAR, Tier.NOTIFY), (Tier.NOTIFY, Tier.REVEAL), (Tier.REVEAL, Tier.CLEAR)):
        assert victim_notices(change(a, b, kind=EventKind.TIER_CHANGED), [ORDER]) == []
        assert victim_notices(change(a, b), [ORDER])


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_every_victim_text_is_discreet_and_in_both_languages(kind: str) -> None:
    text = TEXTS[kind]
    assert text.ko and text.en
    for s in (text.ko, text.en):
        assert not re.search(r"\d", s), "no distance, no time, no number on a lock screen"
        for word in ("offender", "가해자", "protective order", "접근금지", "bangpae", "방패"):
            assert word not in s, f"{kind} says what the app is for: {word}"


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        (Tier.CLEAR, Tier.NOTIFY, "tier_notify"),
        (Tier.NOTIFY, Tier.REVEAL, "tier_reveal"),
        (Tier.CLEAR, Tier.BREACH, "tier_breach"),
        (Tier.REVEAL, Tier.BREACH, "tier_breach"),
        (Tier.NOTIFY, Tier.CLEAR, "tier_clear"),
        (Tier.BREACH, Tier.CLEAR, "tier_clear"),
        (Tier.REVEAL, Tier.UNCERTAIN, "offender_signal_lost"),
        (Tier.UNCERTAIN, Tier.CLEAR, "tier_clear"),
        (Tier.UNCERTAIN, Tier.BREACH, "tier_breach"),
        (Tier.BREACH, Tier.REVEAL, None),  # stepping down but still near: the app shows it
        (Tier.REVEAL, Tier.NOTIFY, None),
    ],
)
def test_kr_tells_her_each_step_up_and_when_he_is_away(a: Tier, b: Tier, kind: str | None) -> None:
    told = victim_notices(change(a, b), [ORDER])
    assert [n.kind for n in told] == ([] if kind is None else [kind])
    for n in told:
        assert (n.audience, n.person_id, n.order_id) == ("victim", 2, 7)


FR = Order(
    8, 1, 2, keep_away_m=1000.0, reveal_radius_m=1000.0, notify_radius_m=2000.0, profile="fr"
)


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        (Tier.CLEAR, Tier.NOTIFY, None),  # the pre-alert is the operator's, not hers
        (Tier.NOTIFY, Tier.REVEAL, None),
        (Tier.NOTIFY, Tier.CLEAR, None),  # he complied: she never knew
        (Tier.NOTIFY, Tier.BREACH, "tier_breach"),  # the alert is hers and the police's
        (Tier.BREACH, Tier.NOTIFY, "tier_clear"),  # out of the alert distance: clear to her
        (Tier.REVEAL, Tier.UNCERTAIN, None),  # lost while in pre-alert: she was never told
        (Tier.BREACH, Tier.UNCERTAIN, "offender_signal_lost"),
    ],
)
def test_fr_withholds_the_pre_alert_from_her(a: Tier, b: Tier, kind: str | None) -> None:
    assert notices.victim_tier("fr", Tier.NOTIFY) == Tier.CLEAR
    told = victim_notices(change(a, b, FR), [FR])
    assert [n.kind for n in told] == ([] if kind is None else [kind])


def test_his_device_going_silent_is_told_to_the_victims_of_his_orders_only() -> None:
    other = Order(9, offender_id=5, victim_id=6)
    offline = make_event(EventKind.OFFLINE, T, 11, device_id=11, person_id=1)
    told = victim_notices(offline, [ORDER, other])
    assert [(n.kind, n.person_id) for n in told] == [("offender_device_down", 2)]
    # her own phone going silent tells her nothing
    mine = make_event(EventKind.OFFLINE, T, 12, device_id=12, person_id=2)
    assert victim_notices(mine, [ORDER]) == []


def test_an_ended_order_tells_nobody() -> None:
    ended = Order(7, 1, 2, valid_until=T - 1)
    assert victim_notices(change(Tier.CLEAR, Tier.BREACH, ended), [ended]) == []
    assert service_notices([ended], True, T) == []


def test_an_sos_is_never_confirmed_on_her_lock_screen() -> None:
    sos = make_event(EventKind.SOS, T, 3, person_id=2, data={"alarm": "sos_silent"})
    assert victim_notices(sos, [ORDER]) == []


def test_staff_phones_get_critical_incidents_and_the_supervisor_each_page() -> None:
    exact = EventKind.TIER_CHANGED
    [n] = staff_notices(change(Tier.NOTIFY, Tier.BREACH, kind=exact))
    assert (n.audience, n.role, n.priority) == ("staff", "operator", "critical")
    assert "breach" in n.text.en and "order 7" in n.text.en
    assert staff_notices(change(Tier.CLEAR, Tier.NOTIFY, kind=exact)) == []  # the console has it
    assert staff_notices(change(Tier.NOTIFY, Tier.BREACH)) == []  # what she is shown: hers
    page = make_event(
        EventKind.INCIDENT_ESCALATED, T, 4, 2, order_id=7, data={"incident_id": 4, "page": 2}
    )
    [p] = staff_notices(page)
    assert (p.role, p.kind, p.window_s) == ("supervisor", "escalated", 0.0)


def test_the_same_notice_is_sent_once_per_window_and_a_breach_soonest_again() -> None:
    [notify] = victim_notices(change(Tier.CLEAR, Tier.NOTIFY), [ORDER])
    [breach] = victim_notices(change(Tier.NOTIFY, Tier.BREACH), [ORDER])
    assert due(None, notify)
    assert not due(notify.at - 599, notify) and due(notify.at - 600, notify)
    assert not due(breach.at - 59, breach) and due(breach.at - 60, breach)
    assert notify.dedup_key != breach.dedup_key


def test_the_offender_is_never_an_audience() -> None:
    events = [change(a, b) for a in Tier for b in Tier if a != b]
    events.append(make_event(EventKind.OFFLINE, T, 1, device_id=1, person_id=1))
    for e in events:
        for n in victim_notices(e, [ORDER]) + staff_notices(e):
            assert n.person_id != ORDER.offender_id
            assert n.audience in ("victim", "staff")


def test_every_kind_anyone_may_be_told_of_is_followed_by_the_notices_reaction() -> None:
    """The reactions table follows ``NOTICE_KINDS`` only: a kind missing from it would
    never reach anyone, so every kind and tier step that tells somebody is in it."""
    order = Order(7, 1, 2)
    tiers = [None, *Tier]
    telling = set()
    for kind in EventKind:
        for a in tiers:
            for b in tiers:
                e = make_event(kind, 100.0, a, b, order_id=7, person_id=1, tier_from=a, tier_to=b)
                if victim_notices(e, [order]) or staff_notices(e):
                    telling.add(kind)
    assert telling <= notices.NOTICE_KINDS
    assert {EventKind.SHOWN_TIER_CHANGED, EventKind.TIER_CHANGED, EventKind.TAMPER} <= telling
