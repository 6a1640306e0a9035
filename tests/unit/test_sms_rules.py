"""Which notices are texted to her, in which words, and how often (docs/sms.md)."""

from __future__ import annotations

import re

import pytest

from bangpae.domain import notices
from bangpae.domain.model import Order
from bangpae.domain.notices import (
    SMS_MIN_INTERVAL_S,
    TEXTS,
    Notice,
    SmsPrefs,
    sms_capped,
    sms_prefs,
    sms_text,
    sms_wanted,
)

ORDER = Order(7, 1, 2, profile="kr")


def notice(kind: str, at: float = 1000.0) -> Notice:
    return notices._to_victim(ORDER, kind, "high", at)


def test_the_kr_profile_texts_the_pre_alert_by_default_and_others_do_not() -> None:
    assert "notify" in sms_prefs(None, "kr").tiers
    assert "notify" not in sms_prefs(None, "es").tiers
    assert sms_prefs(None, "es").tiers == ("reveal", "breach", "uncertain")


def test_stored_choices_win_and_unknown_values_are_dropped() -> None:
    prefs = sms_prefs({"enabled": True, "tiers": ["breach", "clear", 3], "lang": "xx"}, "kr")
    assert prefs == SmsPrefs(True, ("breach",), "ko")


@pytest.mark.parametrize(
    ("kind", "tiers", "enabled", "why"),
    [
        ("tier_notify", ("notify",), True, None),
        ("tier_notify", ("breach",), True, "tier not chosen"),
        ("tier_breach", ("breach",), False, "texts off"),
        ("offender_signal_lost", ("uncertain",), True, None),
        ("offender_device_down", (), True, None),  # her protection is weakened: always
        ("service_degraded", (), True, None),
        ("tier_clear", notices.SMS_TIERS, True, "not texted"),
        ("service_restored", notices.SMS_TIERS, True, "not texted"),
    ],
)
def test_what_is_texted_follows_her_choices(
    kind: str, tiers: tuple[str, ...], enabled: bool, why: str | None
) -> None:
    assert sms_wanted(notice(kind), SmsPrefs(enabled, tiers)) == why


def test_staff_notices_are_never_texted() -> None:
    staff = Notice("staff", "incident", "critical", TEXTS["tier_breach"], "k", 0.0, role="operator")
    assert sms_wanted(staff, SmsPrefs(True, notices.SMS_TIERS)) == "not for staff"


def test_one_text_per_kind_per_five_minutes_and_a_breach_passes_the_hourly_cap() -> None:
    n = notice("tier_reveal", 1000.0)
    assert sms_capped(n, 1000.0 - SMS_MIN_INTERVAL_S + 1, 0)
    assert not sms_capped(n, 1000.0 - SMS_MIN_INTERVAL_S, 0)
    assert sms_capped(n, None, notices.SMS_MAX_PER_HOUR)
    assert not sms_capped(notice("tier_breach"), None, notices.SMS_MAX_PER_HOUR)
    assert sms_capped(notice("tier_breach", 1000.0), 900.0, 0)


@pytest.mark.parametrize("kind", sorted(set(notices.SMS_TIER_OF) | notices.SMS_ALWAYS))
@pytest.mark.parametrize("lang", ["ko", "en"])
def test_a_text_has_no_digit_and_is_in_her_language(kind: str, lang: str) -> None:
    text = sms_text(notice(kind), lang)
    assert text == getattr(TEXTS[kind], lang)
    assert not re.search(r"\d", text)
