"""The disclosure policy: what the victim sees of him (who may read a position is the
access policy's, tested in test_access)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain.disclosure import iso, victim_view
from bangpae.domain.model import Fix, Tier

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z, 20:06 in Seoul
HIS_FIX = Fix(11, T0, 37.512345678, 127.023456789, 6.25, 1.337, 181.26, received_at=T0 + 2)
KEYS = {"tier", "distance_m", "offender"}
POSITION_KEYS = {"lat", "lon", "accuracy_m", "heading_deg", "speed_mps", "fix_time", "age_s"}

# -- what the victim sees ---------------------------------------------------------------


def test_in_clear_she_sees_the_tier_only() -> None:
    view = victim_view(Tier.CLEAR, 3456.7, HIS_FIX, T0 + 10)
    assert view == {"tier": "clear", "distance_m": None, "offender": None}


def test_in_notify_she_is_told_within_about_n_metres_rounded_up_to_100() -> None:
    view = victim_view(Tier.NOTIFY, 1234.5, HIS_FIX, T0 + 10)
    assert view == {"tier": "notify", "distance_m": 1300, "offender": None}
    # the margin the tier was entered on, when given
    assert victim_view(Tier.NOTIFY, 2030.0, HIS_FIX, T0, margin_m=1990.0)["distance_m"] == 2000
    assert victim_view(Tier.NOTIFY, 1200.0, HIS_FIX, T0)["distance_m"] == 1200
    assert victim_view(Tier.NOTIFY, None, None, T0)["distance_m"] is None


def test_in_reveal_she_sees_the_exact_distance_and_his_live_position() -> None:
    view = victim_view(Tier.REVEAL, 432.6, HIS_FIX, T0 + 12.34)
    assert set(view) == KEYS and view["tier"] == "reveal" and view["distance_m"] == 433
    assert view["offender"] == {
        "lat": 37.512346,
        "lon": 127.023457,
        "accuracy_m": 6.2,
        "heading_deg": 181.3,
        "speed_mps": 1.34,
        "fix_time": "2026-11-18T11:06:40.000Z",
        "age_s": 12.3,
    }
    json.dumps(view)


def test_in_breach_she_sees_him_even_during_a_misuse_pause() -> None:
    view = victim_view(Tier.BREACH, 61.2, HIS_FIX, T0 + 1, misuse_paused=True)
    assert view["distance_m"] == 61 and set(view["offender"]) == POSITION_KEYS


def test_a_misuse_pause_hides_his_position_and_coarsens_the_distance_but_not_the_tier() -> None:
    view = victim_view(Tier.REVEAL, 432.6, HIS_FIX, T0 + 1, misuse_paused=True)
    assert view == {
        "tier": "reveal",
        "distance_m": 500,
        "offender": None,
        "position_paused": True,
    }


def test_in_uncertain_she_sees_his_last_fix_its_age_and_when_the_signal_was_lost() -> None:
    view = victim_view(Tier.UNCERTAIN, 250.4, HIS_FIX, T0 + 185.0, signal_lost_at=T0 + 120)
    assert view["tier"] == "uncertain" and view["distance_m"] == 250
    assert view["offender"]["age_s"] == 185.0
    assert view["signal_lost_at"] == "2026-11-18T11:08:40.000Z"
    # without a given time, the last fix's
    assert victim_view(Tier.UNCERTAIN, 250.4, HIS_FIX, T0 + 185)["signal_lost_at"] == iso(T0)


def test_unknown_accuracy_heading_and_speed_stay_null() -> None:
    bare = Fix(11, T0, 37.5, 127.0)
    pos = victim_view(Tier.REVEAL, 300.0, bare, T0)["offender"]
    assert pos["accuracy_m"] is None and pos["heading_deg"] is None and pos["speed_mps"] is None
    assert pos["age_s"] == 0.0


def test_a_fix_time_in_the_future_has_age_zero() -> None:
    assert victim_view(Tier.REVEAL, 300.0, HIS_FIX, T0 - 5)["offender"]["age_s"] == 0.0


@given(
    tier=st.sampled_from(list(Tier)),
    distance=st.one_of(st.none(), st.floats(0.0, 20_000.0)),
    paused=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_his_position_is_never_shown_in_clear_or_notify_and_the_distance_never_understated(
    tier: Tier, distance: float | None, paused: bool
) -> None:
    view = victim_view(tier, distance, HIS_FIX, T0 + 30, paused)
    assert set(view) - {"signal_lost_at", "position_paused"} == KEYS
    if tier in (Tier.CLEAR, Tier.NOTIFY):
        assert view["offender"] is None
    if tier == Tier.CLEAR or distance is None:
        assert view["distance_m"] is None
    elif tier == Tier.NOTIFY:
        assert distance - 1e-6 <= view["distance_m"] < distance + 100 + 1e-6
        assert view["distance_m"] % 100 == 0 and view["distance_m"] >= 100
    json.dumps(view)
