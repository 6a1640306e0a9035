"""Reporting intervals: pursuit mode for her app, one fixed interval for every tracker.

Pursuit mode makes the protected person's app report faster while he is within
the notify radius. A tracker (GT06, H02: a device that proves who it is by a
number printed on it) is told one fixed interval at login and nothing else, so
that nothing reaching it depends on her (docs/devices-and-commands.md).
"""

from __future__ import annotations

from bangpae.domain.model import Tier

PURSUIT_INTERVAL_S = 15
NORMAL_INTERVAL_S = 60
# What every tracker is told once it logs in, whoever wears it and wherever anyone is.
TRACKER_INTERVAL_S = 15


def report_interval_s(tiers: list[Tier]) -> int:
    """The reporting interval her app should use, given the tiers of the orders protecting her.

    Fast while any order is notify or closer, or uncertain (his signal was lost nearby).
    Only for the protected person's own authenticated app: never for his devices, nor
    for any tracker.
    """
    close = any(t in (Tier.NOTIFY, Tier.REVEAL, Tier.BREACH, Tier.UNCERTAIN) for t in tiers)
    return PURSUIT_INTERVAL_S if close else NORMAL_INTERVAL_S
