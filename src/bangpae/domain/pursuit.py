"""Pursuit mode: both parties report faster while they are within the notify radius."""

from __future__ import annotations

from bangpae.domain.model import Tier

PURSUIT_INTERVAL_S = 15
NORMAL_INTERVAL_S = 60


def report_interval_s(tiers: list[Tier]) -> int:
    """The reporting interval a person's devices should use, given the tiers of their orders.

    Fast while any order is notify or closer, or uncertain (his signal was lost nearby).
    """
    close = any(t in (Tier.NOTIFY, Tier.REVEAL, Tier.BREACH, Tier.UNCERTAIN) for t in tiers)
    return PURSUIT_INTERVAL_S if close else NORMAL_INTERVAL_S
