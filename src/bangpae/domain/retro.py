"""Late fixes, judged after the fact: a past breach is reported, the live tier is untouched."""

from __future__ import annotations

from bangpae.domain import geodesy, tiers
from bangpae.domain.model import Event, EventKind, Fix, Order, make_event


def evaluate_late(
    order: Order, late_fix: Fix, partner_fix: Fix | None, late_is_offender: bool
) -> list[Event]:
    """``retro_breach`` when a late fix and the partner's fix of that time were within keep-away.

    Doubt counts toward danger here too: the margin is distance minus both accuracies.
    Without a partner fix of that time nothing can be decided.
    """
    if partner_fix is None or not late_fix.valid or not partner_fix.valid:
        return []
    d = geodesy.geodesic_distance_m(late_fix.lat, late_fix.lon, partner_fix.lat, partner_fix.lon)
    u = (
        tiers.effective_accuracy(late_fix.accuracy_m)[0]
        + tiers.effective_accuracy(partner_fix.accuracy_m)[0]
    )
    if d - u > order.keep_away_m:
        return []
    offender = order.offender_id if late_is_offender else None
    return [
        make_event(
            EventKind.RETRO_BREACH,
            late_fix.fix_time,
            order.id,
            late_fix.device_id,
            order_id=order.id,
            person_id=offender if offender is not None else order.offender_id,
            device_id=late_fix.device_id,
            distance_m=round(d, 2),
            late=True,
            data={
                "late_data": True,
                "partner_fix_time": partner_fix.fix_time,
                "margin_m": round(d - u, 2),
            },
        )
    ]
