"""A protective order as entered: each rule it must keep, and the first one broken named."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bangpae.domain.model import WeeklyWindow
from bangpae.domain.orders import OrderError, epoch, order_from, zone_from

NOW = 1_800_000_000.0
KST = timezone(timedelta(hours=9))
HOME = {"type": "Point", "coordinates": [127.0, 37.5]}


@dataclass(frozen=True)
class Window:
    day: int
    start: str
    end: str


@dataclass(frozen=True)
class ZoneIn:
    geometry: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)
    schedule: tuple[Window, ...] = ()


@dataclass(frozen=True)
class Entry:
    offender_id: int = 1
    victim_id: int = 2
    notify_radius_m: float = 2000.0
    reveal_radius_m: float = 600.0
    keep_away_m: float = 100.0
    hysteresis_m: float = 50.0
    zones: tuple[ZoneIn, ...] = ()
    curfews: tuple[ZoneIn, ...] = ()
    stale_after_s: float = 120.0
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    profile: str = "kr"
    timezone: str = "Asia/Seoul"


def refusal(entry: Entry) -> str:
    with pytest.raises(OrderError) as exc:
        order_from(entry, NOW)
    return str(exc.value)


def test_an_order_entered_without_a_start_is_in_force_from_now_and_has_no_id_yet() -> None:
    order = order_from(Entry(), NOW)
    assert (order.id, order.valid_from, order.valid_until) == (0, NOW, None)
    assert (order.keep_away_m, order.reveal_radius_m, order.notify_radius_m) == (100, 600, 2000)


def test_an_order_keeps_the_times_it_was_given_with_their_zones() -> None:
    start = datetime(2027, 1, 1, 9, 0, tzinfo=KST)
    order = order_from(Entry(valid_from=start, valid_until=start + timedelta(days=30)), NOW)
    assert order.valid_from == start.timestamp()
    assert order.valid_until == start.timestamp() + 30 * 86400


@pytest.mark.parametrize(
    ("keep_away", "reveal", "notify"), [(600, 600, 2000), (100, 2000, 2000), (700, 600, 2000)]
)
def test_radii_must_grow_from_keep_away_to_reveal_to_notify(
    keep_away: float, reveal: float, notify: float
) -> None:
    entry = Entry(keep_away_m=keep_away, reveal_radius_m=reveal, notify_radius_m=notify)
    assert refusal(entry) == "radii must satisfy keep_away_m < reveal_radius_m < notify_radius_m"


@pytest.mark.parametrize("name", ["Mars/Olympus", "Asia", "../etc/passwd", ""])
def test_a_time_zone_the_zone_database_does_not_know_is_refused(name: str) -> None:
    assert refusal(Entry(timezone=name)) == f"unknown time zone {name!r}"


def test_a_time_without_a_zone_is_refused_rather_than_read_in_the_servers() -> None:
    naive = datetime(2027, 1, 1, 9, 0)  # noqa: DTZ001 - what a careless client sends
    assert refusal(Entry(valid_until=naive)).startswith("times need a zone")
    assert epoch(None) is None
    assert epoch(datetime(2027, 1, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()


def test_an_order_that_ends_before_it_begins_or_as_it_begins_is_refused() -> None:
    start = datetime(2027, 1, 1, 9, 0, tzinfo=KST)
    for end in (start, start - timedelta(seconds=1)):
        assert refusal(Entry(valid_from=start, valid_until=end)) == (
            "valid_until must come after valid_from"
        )
    ended = datetime.fromtimestamp(NOW - 1, UTC)  # no start given: it would begin now
    assert refusal(Entry(valid_until=ended)) == "valid_until must come after valid_from"


@pytest.mark.parametrize("radius", [None, 0, -5, 50_001, "300"])
def test_a_point_zone_needs_a_radius_between_0_and_50_km(radius: Any) -> None:
    zone = ZoneIn(HOME, {} if radius is None else {"radius_m": radius})
    assert refusal(Entry(zones=(zone,))) == (
        "a Point zone needs properties.radius_m between 0 and 50,000 m"
    )


def test_a_zone_is_a_polygon_or_a_point() -> None:
    line = ZoneIn({"type": "LineString", "coordinates": [[127.0, 37.5], [127.1, 37.5]]})
    assert refusal(Entry(curfews=(line,))) == (
        "a zone is a GeoJSON Polygon, or a Point with radius_m"
    )


def test_a_zone_that_does_not_compile_is_refused_with_its_place_in_the_list() -> None:
    crossing = ZoneIn(
        {
            "type": "Polygon",
            "coordinates": [[[127.0, 37.5], [127.01, 37.51], [127.01, 37.5], [127.0, 37.51]]],
        }
    )
    good = ZoneIn(HOME, {"radius_m": 300})
    message = refusal(Entry(zones=(good, crossing)))
    assert message.startswith("zone 1: ")


def test_a_zone_keeps_its_id_name_radius_and_weekly_windows_in_minutes() -> None:
    entry = ZoneIn(
        HOME,
        {"radius_m": 300, "id": "home", "name": "Home"},
        (Window(0, "22:00", "06:30"), Window(6, "00:00", "24:00")),
    )
    zone = zone_from(3, entry)
    assert (zone.id, zone.name, zone.radius_m) == ("home", "Home", 300.0)
    assert zone.schedule == (WeeklyWindow(0, 1320, 390), WeeklyWindow(6, 0, 1440))
    assert zone_from(3, replace(entry, properties={"radius_m": 300})).id == "3"


def test_the_first_rule_broken_is_the_one_named() -> None:
    everything_wrong = Entry(
        keep_away_m=700,
        timezone="Mars/Olympus",
        zones=(ZoneIn({"type": "LineString", "coordinates": []}),),
    )
    assert refusal(everything_wrong).startswith("radii must satisfy")
    assert refusal(replace(everything_wrong, keep_away_m=100)).startswith("unknown time zone")
