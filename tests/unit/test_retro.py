"""Late fixes judged after the fact: a past breach is late data, never live state."""

from __future__ import annotations

from typing import Any

import pytest
from geographiclib.geodesic import Geodesic

from bangpae.domain.incidents import incident_kind, priority_of
from bangpae.domain.model import EventKind, Fix, Order
from bangpae.domain.retro import evaluate_late, evaluate_late_alarms

T0 = 1_795_000_000.0
HOME = (37.5, 127.0)
ORDER = Order(7, offender_id=1, victim_id=2, valid_from=T0 - 86_400)
ANKLE, PHONE = 11, 22
G = Geodesic.WGS84


def at(d: float) -> tuple[float, float]:
    g = G.Direct(HOME[0], HOME[1], 60.0, d)
    return g["lat2"], g["lon2"]


def him(t: float, d: float, acc: float | None = 5.0, **kw: Any) -> Fix:
    return Fix(ANKLE, T0 + t, *at(d), acc, **kw)


def her(t: float = 0.0, acc: float | None = 5.0, **kw: Any) -> Fix:
    return Fix(PHONE, T0 + t, *HOME, acc, **kw)


def test_a_late_pair_within_keep_away_is_a_retro_breach_marked_late() -> None:
    [e] = evaluate_late(ORDER, him(52, 40.0), her(50), True)
    assert e.kind == EventKind.RETRO_BREACH and e.late
    assert e.order_id == 7 and e.person_id == 1 and e.device_id == ANKLE
    assert e.at == T0 + 52 and e.distance_m == pytest.approx(40.0)
    assert e.data["late_data"] is True and e.data["late_party"] == "offender"
    assert e.data["margin_m"] == pytest.approx(30.0) and e.data["partner_fix_time"] == T0 + 50
    assert (incident_kind(e), priority_of(e)) == ("retro_breach", "critical")


def test_the_tier_rule_decides_doubt_counting_toward_danger() -> None:
    assert evaluate_late(ORDER, him(0, 109.99), her())  # margin 99.99: breach
    assert not evaluate_late(ORDER, him(0, 110.01), her())
    # a fix without accuracy counts 25 m; one worse than 100 m counts 100 m, flagged
    assert evaluate_late(ORDER, him(0, 130.0, acc=None), her())
    [e] = evaluate_late(ORDER, him(0, 204.99, acc=900.0), her())
    assert e.data["poor_accuracy"] is True
    assert not evaluate_late(ORDER, him(0, 205.01, acc=900.0), her())


def test_a_late_victim_fix_is_judged_the_same_way() -> None:
    [e] = evaluate_late(ORDER, her(30), him(25, 60.0), False)
    assert e.device_id == PHONE and e.person_id == 1 and e.data["late_party"] == "victim"


def test_nothing_is_decided_without_a_fresh_valid_partner_fix_of_that_time() -> None:
    assert evaluate_late(ORDER, him(0, 40.0), None) == []
    assert evaluate_late(ORDER, him(0, 40.0), her(valid=False)) == []
    assert evaluate_late(ORDER, him(0, 40.0, valid=False), her()) == []
    assert evaluate_late(ORDER, him(200, 40.0), her(0)) == []  # 200 s apart: stale partner
    assert evaluate_late(ORDER, him(120, 40.0), her(0))  # exactly stale_after_s: still fresh


def test_a_late_fix_from_before_the_order_was_in_force_is_not_a_breach() -> None:
    later = Order(7, 1, 2, valid_from=T0 + 3600)
    assert evaluate_late(later, him(0, 40.0), her()) == []
    ended = Order(7, 1, 2, valid_from=T0 - 7200, valid_until=T0 - 60)
    assert evaluate_late(ended, him(0, 40.0), her()) == []


def test_the_same_late_pair_gives_the_same_id_and_another_partner_fix_another() -> None:
    a = evaluate_late(ORDER, him(52, 40.0), her(50))
    b = evaluate_late(ORDER, him(52, 40.0), her(50))
    c = evaluate_late(ORDER, him(52, 40.0), her(45))
    assert a[0].id == b[0].id != c[0].id


def test_alarms_in_a_late_message_are_reported_as_late_data() -> None:
    late = him(10, 3000.0, alarms=frozenset({"tamper", "sos", "vibration"}))
    events = evaluate_late_alarms(late, person_id=1)
    assert [e.kind for e in events] == [EventKind.SOS, EventKind.TAMPER]
    assert all(e.late and e.data["late_data"] and e.person_id == 1 for e in events)
    assert [e.id for e in events] == [e.id for e in evaluate_late_alarms(late, person_id=1)]
    assert evaluate_late_alarms(him(10, 3000.0)) == []
