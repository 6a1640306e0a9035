"""The disclosure policy: what the victim sees of him (who may read a position is the
access policy's, tested in test_access)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain import geodesy
from bangpae.domain.disclosure import OrderState, iso, victim_view
from bangpae.domain.model import Fix, Tier

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z, 20:06 in Seoul
HIS_FIX = Fix(11, T0, 37.512345678, 127.023456789, 6.25, 1.337, 181.26, received_at=T0 + 2)
KEYS = {"tier", "distance_m", "offender"}
POSITION_KEYS = {"lat", "lon", "accuracy_m", "heading_deg", "speed_mps", "fix_time", "age_s"}

# -- what the victim sees ---------------------------------------------------------------


def her_at(distance_m: float, t: float = T0, acc: float | None = 5.0, his: Fix = HIS_FIX) -> Fix:
    """Her trusted point ``distance_m`` due south of his fix."""
    lat, lon = geodesy.destination(his.lat, his.lon, 180.0, distance_m)
    return Fix(12, t, lat, lon, acc)


def state(
    shown: Tier,
    distance_m: float | None,
    *,
    tier: Tier | None = None,
    his: Fix | None = HIS_FIX,
    confirmed: bool = True,
    paused: bool = False,
    her_t: float = T0,
    her_acc: float | None = 5.0,
    signal_lost_at: float | None = None,
) -> OrderState:
    return OrderState(
        shown=shown,
        tier=shown if tier is None else tier,
        offender_fix=his,
        victim_fix=None
        if distance_m is None or his is None
        else her_at(distance_m, her_t, her_acc, his),
        confirmed=confirmed,
        paused=paused,
        grid=(0.25, 0.75),
        reveal_radius_m=600.0,
        notify_radius_m=2000.0,
        stale_after_s=120.0,
        signal_lost_at=signal_lost_at,
    )


def test_in_clear_she_sees_the_tier_only() -> None:
    view = victim_view(state(Tier.CLEAR, 3456.7), T0 + 10)
    assert view == {"tier": "clear", "distance_m": None, "offender": None}


def test_in_notify_she_is_told_a_coarse_distance_from_his_cell_only() -> None:
    view = victim_view(state(Tier.NOTIFY, 1234.5), T0 + 10)
    assert view["tier"] == "notify" and view["offender"] is None
    assert view["distance_m"] % 500 == 0 and 500 <= view["distance_m"] <= 2000
    # never more than the truth: his cell's nearest point is no farther than he is
    assert view["distance_m"] <= 1500
    assert victim_view(state(Tier.NOTIFY, None), T0)["distance_m"] is None


def test_in_reveal_she_sees_the_exact_distance_and_his_live_position() -> None:
    view = victim_view(state(Tier.REVEAL, 432.6), T0 + 12.34)
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


def test_beyond_the_reveal_radius_he_is_never_shown_whatever_her_accuracy() -> None:
    for acc in (5.0, 100.0, 5000.0, None):
        view = victim_view(state(Tier.REVEAL, 600.5, her_acc=acc), T0 + 1)
        assert view["offender"] is None and view["distance_m"] % 500 == 0
    assert victim_view(state(Tier.REVEAL, 599.5, her_acc=5000.0), T0 + 1)["offender"]


def test_an_unconfirmed_or_stale_track_of_hers_discloses_nothing() -> None:
    assert victim_view(state(Tier.REVEAL, 300.0, confirmed=False), T0)["offender"] is None
    assert victim_view(state(Tier.REVEAL, 300.0, her_t=T0 - 121), T0)["offender"] is None


def test_in_breach_she_sees_him_even_during_a_misuse_pause() -> None:
    view = victim_view(state(Tier.BREACH, 61.2, paused=True), T0 + 1)
    assert view["distance_m"] == 61 and set(view["offender"]) == POSITION_KEYS


def test_a_misuse_pause_hides_his_position_and_coarsens_the_distance_but_not_the_tier() -> None:
    view = victim_view(state(Tier.REVEAL, 432.6, paused=True), T0 + 1)
    assert view["tier"] == "reveal" and view["offender"] is None
    assert view["position_paused"] is True and view["distance_m"] in (500, 1000)


def test_in_uncertain_she_sees_his_last_fix_its_age_and_when_the_signal_was_lost() -> None:
    s = state(Tier.UNCERTAIN, 250.4, her_t=T0 + 180, signal_lost_at=T0 + 120)
    view = victim_view(s, T0 + 185.0)
    assert view["tier"] == "uncertain" and view["distance_m"] == 250
    assert view["offender"]["age_s"] == 185.0
    assert view["signal_lost_at"] == "2026-11-18T11:08:40.000Z"
    # without a given time, the last fix's
    s = state(Tier.UNCERTAIN, 250.4, her_t=T0 + 180)
    assert victim_view(s, T0 + 185)["signal_lost_at"] == iso(T0)
    # lost while she was beyond the reveal radius: no position
    far = state(Tier.UNCERTAIN, 700.0, her_t=T0 + 180)
    assert victim_view(far, T0 + 185)["offender"] is None


def test_unknown_accuracy_heading_and_speed_stay_null() -> None:
    bare = Fix(11, T0, 37.5, 127.0)
    pos = victim_view(state(Tier.REVEAL, 300.0, his=bare), T0)["offender"]
    assert pos["accuracy_m"] is None and pos["heading_deg"] is None and pos["speed_mps"] is None
    assert pos["age_s"] == 0.0


def test_a_fix_time_in_the_future_has_age_zero() -> None:
    view = victim_view(state(Tier.REVEAL, 300.0, her_t=T0 - 5), T0 - 5)
    assert view["offender"]["age_s"] == 0.0


@given(
    shown=st.sampled_from(list(Tier)),
    tier=st.sampled_from(list(Tier)),
    distance=st.one_of(st.none(), st.floats(0.0, 20_000.0)),
    paused=st.booleans(),
    confirmed=st.booleans(),
    acc=st.one_of(st.none(), st.floats(0.0, 10_000.0)),
)
@settings(max_examples=300, deadline=None)
def test_his_position_is_shown_only_within_the_reveal_radius_and_never_in_clear_or_notify(
    shown: Tier,
    tier: Tier,
    distance: float | None,
    paused: bool,
    confirmed: bool,
    acc: float | None,
) -> None:
    s = state(shown, distance, tier=tier, paused=paused, confirmed=confirmed, her_acc=acc)
    view = victim_view(s, T0 + 30)
    assert set(view) - {"signal_lost_at", "position_paused"} == KEYS
    if view["offender"] is not None:
        assert shown in (Tier.REVEAL, Tier.BREACH, Tier.UNCERTAIN) and confirmed
        assert distance is not None and distance <= 600.0 + 1e-6
    if shown in (Tier.CLEAR, Tier.NOTIFY):
        assert view["offender"] is None
    if shown == Tier.CLEAR or distance is None:
        assert view["distance_m"] is None
    elif view["offender"] is None and shown != Tier.UNCERTAIN:
        assert view["distance_m"] % 500 == 0 and 500 <= view["distance_m"] <= 2000
    json.dumps(view)
