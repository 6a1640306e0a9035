"""Late fixes, judged after the fact: a past breach is reported, the live state is untouched.

A late fix (store-and-forward: older than the newest fix already applied for its
device) is paired with the partner's stored fix nearest before it. The pair is
judged by the tier rule of docs/tiers.md: a breach when ``d - u <= keep_away_m``,
with ``u`` the two effective accuracies (capped at 100 m, unknown 25 m). The
pair counts only if the partner's fix was fresh at the late fix's time (within
the order's ``stale_after_s``) and the order was in force then. Every event
here is marked ``late`` and says so in its data; nothing here reads or changes
live state.
"""

from __future__ import annotations

from bangpae.domain import geodesy, tiers
from bangpae.domain.health import ALARM_EVENTS
from bangpae.domain.model import Event, EventKind, Fix, Order, make_event


def evaluate_late(
    order: Order,
    late_fix: Fix,
    partner_fix: Fix | None,
    late_is_offender: bool | None = None,
) -> list[Event]:
    """``retro_breach`` when a late fix and the partner's fix of that time were within keep-away.

    ``late_is_offender`` (optional) records whose fix came late; without a partner
    fix near that time nothing can be decided.
    """
    if partner_fix is None or not late_fix.valid or not partner_fix.valid:
        return []
    if not order.active(late_fix.fix_time):
        return []
    if abs(late_fix.fix_time - partner_fix.fix_time) > order.stale_after_s:
        return []
    d = geodesy.geodesic_distance_m(late_fix.lat, late_fix.lon, partner_fix.lat, partner_fix.lon)
    acc_late, poor_late = tiers.effective_accuracy(late_fix.accuracy_m)
    acc_partner, poor_partner = tiers.effective_accuracy(partner_fix.accuracy_m)
    margin = d - acc_late - acc_partner
    if margin > order.keep_away_m:
        return []
    party = None if late_is_offender is None else ("offender" if late_is_offender else "victim")
    return [
        make_event(
            EventKind.RETRO_BREACH,
            late_fix.fix_time,
            order.id,
            late_fix.device_id,
            partner_fix.device_id,
            partner_fix.fix_time,
            order_id=order.id,
            person_id=order.offender_id,
            device_id=late_fix.device_id,
            distance_m=round(d, 2),
            late=True,
            data={
                "late_data": True,
                "late_party": party,
                "partner_device_id": partner_fix.device_id,
                "partner_fix_time": partner_fix.fix_time,
                "margin_m": round(margin, 2),
                "keep_away_m": order.keep_away_m,
                "poor_accuracy": poor_late or poor_partner,
            },
        )
    ]


def evaluate_late_alarms(late_fix: Fix, person_id: int | None = None) -> list[Event]:
    """Alarm events (tamper, case open, power cut, SOS) carried by a late message, marked late.

    A buffered message's alarm is evidence even when it arrives after the fact; the
    live alarm episodes are not touched.
    """
    return [
        make_event(
            ALARM_EVENTS[alarm],
            late_fix.fix_time,
            late_fix.device_id,
            alarm,
            "late",
            person_id=person_id,
            device_id=late_fix.device_id,
            late=True,
            data={"alarm": alarm, "late_data": True}
            | ({"lat": late_fix.lat, "lon": late_fix.lon} if late_fix.valid else {}),
        )
        for alarm in sorted(late_fix.alarms)
        if alarm in ALARM_EVENTS
    ]
