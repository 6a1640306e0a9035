"""The tier rule: doubt counts toward danger, hysteresis stops flapping, both forms agree."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain.model import Tier
from bangpae.domain.tiers import (
    effective_accuracy,
    next_tier,
    next_tiers,
    notify_distance_m,
)

R = (2000.0, 600.0, 100.0, 50.0)
tiers_ = st.sampled_from([Tier.CLEAR, Tier.NOTIFY, Tier.REVEAL, Tier.BREACH])


@given(st.lists(st.tuples(tiers_, st.floats(-200, 3000)), min_size=1, max_size=200))
def test_the_vector_rule_equals_the_scalar_rule(cases: list[tuple[Tier, float]]) -> None:
    prev = np.array([int(p) for p, _ in cases], dtype=np.int8)
    margin = np.array([m for _, m in cases])
    ones = np.ones(len(cases))
    got = next_tiers(prev, margin, R[0] * ones, R[1] * ones, R[2] * ones, R[3] * ones)
    assert got.tolist() == [int(next_tier(p, m, *R)) for p, m in cases]


@given(prev=tiers_, margin=st.floats(600.0001, 5000))
def test_reveal_is_never_entered_when_confidently_beyond_600_m(prev: Tier, margin: float) -> None:
    new = next_tier(Tier.CLEAR if prev >= Tier.REVEAL else prev, margin, *R)
    assert new < Tier.REVEAL


@given(
    boundary=st.sampled_from([100.0, 600.0, 2000.0]),
    offset=st.floats(-60, 60),
    jitter=st.lists(st.floats(0, 50), min_size=2, max_size=100),
    start=tiers_,
)
@settings(max_examples=300)
def test_jitter_within_the_hysteresis_band_never_makes_the_tier_flap(
    boundary: float, offset: float, jitter: list[float], start: Tier
) -> None:
    # A party jittering within its accuracy moves the margin inside a band no wider
    # than the hysteresis: the tier may settle (up or down), but never goes back.
    low = boundary + offset
    seen = [start]
    for j in jitter:
        seen.append(next_tier(seen[-1], low + j, *R))
    ups = any(b > a for a, b in zip(seen, seen[1:], strict=False))
    downs = any(b < a for a, b in zip(seen, seen[1:], strict=False))
    assert not (ups and downs), seen


def test_leaving_needs_the_margin_beyond_radius_plus_hysteresis() -> None:
    assert next_tier(Tier.REVEAL, 650.0, *R) == Tier.REVEAL
    assert next_tier(Tier.REVEAL, 650.01, *R) == Tier.NOTIFY
    assert next_tier(Tier.BREACH, 150.0, *R) == Tier.BREACH
    assert next_tier(Tier.BREACH, 700.0, *R) == Tier.NOTIFY  # drops past reveal's band at once
    assert next_tier(Tier.BREACH, 640.0, *R) == Tier.REVEAL


def test_accuracy_is_capped_and_unknown_counts_25_m() -> None:
    assert effective_accuracy(None) == (25.0, False)
    assert effective_accuracy(250.0) == (100.0, True)
    assert effective_accuracy(8.0) == (8.0, False)


def test_the_notify_distance_is_rounded_up_to_100_m() -> None:
    assert [notify_distance_m(d) for d in (0.0, 1.0, 1300.0, 1301.0, 1999.9)] == [
        0,
        100,
        1300,
        1400,
        2000,
    ]
