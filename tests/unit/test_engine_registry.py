"""Registering people, devices and orders between batches: the engine never falls over,
and decides exactly what an engine that knew the whole registry from the start decides."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain import geodesy
from bangpae.domain.model import Device, DeviceKind, Fix, Order, Person, PersonKind, Tier
from bangpae.engine.engine import Engine
from tests.scenario import HOME, T0


def test_a_person_registered_after_the_index_was_built_reports_without_a_crash() -> None:
    # an officer going on duty: a new person, after the engine has decided a batch
    e = Engine()
    e.load(
        [Person(1, PersonKind.OFFENDER, "o"), Person(2, PersonKind.VICTIM, "v")],
        [
            Device(10, "A", DeviceKind.ANKLE_MONITOR, "api", 1),
            Device(20, "P", DeviceKind.PHONE, "api", 2),
        ],
        [Order(id=1, offender_id=1, victim_id=2)],
    )
    e.ingest([Fix(10, T0, *HOME, 5.0), Fix(20, T0, *HOME, 5.0)], T0)
    e.load([Person(3, PersonKind.OFFICER, "f")], [Device(30, "F", DeviceKind.PHONE, "api", 3)], [])
    lat, lon = geodesy.offset_m(HOME[0], HOME[1], 50.0, 0.0)
    e.ingest([Fix(10, T0 + 1, lat, lon, 5.0), Fix(30, T0 + 1, *HOME, 5.0)], T0 + 1)
    assert e.tier_of(1) == Tier.BREACH
    assert e.orders_of_person(3) == [] and e.devices_of_person(3) == [30]


# A scenario: registrations and batches in some order. People first come into being, then
# their devices, then orders between them; no device reports before it is registered and
# no party of an order reports before the order exists, so an engine that knew everything
# from the start sees the same history of every order.
Step = tuple[str, Any]


@st.composite
def scenarios(draw: st.DrawFn) -> list[Step]:
    steps: list[Step] = []
    people: list[tuple[int, str]] = []
    devices: dict[int, int] = {}  # device -> person
    reported: set[int] = set()  # people who have reported
    ordered: set[tuple[int, int]] = set()
    for _ in range(draw(st.integers(4, 25))):
        what = draw(st.sampled_from(["person", "device", "order", "batch", "batch"]))
        if what == "person" or not people:
            pid = len(people) + 1
            kind = draw(st.sampled_from(["offender", "victim", "officer"]))
            people.append((pid, kind))
            steps.append(("person", (pid, kind)))
        elif what == "device":
            pid = draw(st.sampled_from([p for p, _ in people]))
            did = 100 + len(devices)
            devices[did] = pid
            steps.append(("device", (did, pid)))
        elif what == "order":
            offs = [p for p, k in people if k == "offender" and p not in reported]
            vics = [p for p, k in people if k == "victim" and p not in reported]
            if offs and vics:
                pair = (draw(st.sampled_from(offs)), draw(st.sampled_from(vics)))
                if pair not in ordered:
                    ordered.add(pair)
                    steps.append(("order", pair))
        elif devices:
            fixes = []
            for did in draw(st.lists(st.sampled_from(sorted(devices)), min_size=1, max_size=6)):
                north = draw(st.floats(-2500.0, 2500.0))
                east = draw(st.floats(-2500.0, 2500.0))
                fixes.append((did, north, east))
                reported.add(devices[did])
            steps.append(("batch", fixes))
    return steps


def _registry(steps: list[Step], upto: int) -> tuple[list[Person], list[Device], list[Order]]:
    people, devices, orders = [], [], []
    for what, x in steps[:upto]:
        if what == "person":
            people.append(Person(x[0], PersonKind(x[1]), "x"))
        elif what == "device":
            devices.append(Device(x[0], f"D{x[0]}", DeviceKind.PHONE, "api", x[1]))
        elif what == "order":
            orders.append(Order(id=len(orders) + 1, offender_id=x[0], victim_id=x[1]))
    return people, devices, orders


def _state(e: Engine, orders: list[Order], now: float) -> list[Any]:
    out = []
    for o in orders:
        v = e.order_view(o.id, now)
        assert v is not None
        out.append((o.id, v.tier, v.shown_tier, v.distance_m, v.misuse_paused))
    return out


@given(scenarios())
@settings(max_examples=150, deadline=None)
def test_registering_between_batches_decides_as_an_engine_that_knew_it_all(
    steps: list[Step],
) -> None:
    live, known = Engine(), Engine()
    known.load(*_registry(steps, len(steps)))
    t = T0
    for i, (what, x) in enumerate(steps):
        if what == "order":  # numbered as the whole registry numbers it
            live.add_order(_registry(steps, i + 1)[2][-1])
            continue
        if what != "batch":
            live.load(*_registry([(what, x)], 1))
            continue
        t += 5.0
        fixes = [
            Fix(did, t, *geodesy.offset_m(HOME[0], HOME[1], north, east), 5.0)
            for did, north, east in x
        ]
        a = [(ev.id, ev.kind) for ev in live.ingest(fixes, t)]
        b = [(ev.id, ev.kind) for ev in known.ingest(fixes, t)]
        assert a == b
        orders = _registry(steps, i + 1)[2]
        assert _state(live, orders, t) == _state(known, orders, t)
