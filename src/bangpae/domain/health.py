"""Device health from what a device reports: alarms and battery, raised once per episode.

An alarm (tamper, case open, power cut, SOS) is raised on its rising edge: the
first message that carries it. It re-arms when a message arrives without it, so
a device that repeats an alarm in every message raises one event, not hundreds.
Battery: ``low_battery`` with severity ``warning`` at or below 20 %, ``critical``
at or below 10 %, each once per discharge; both re-arm after a recharge above 25 %.
Timers (offline, no fix) and position jumps are the engine's, on its columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from bangpae.domain.model import Alarm, Event, EventKind, Fix, make_event

BATTERY_WARNING_PCT = 20.0
BATTERY_CRITICAL_PCT = 10.0
BATTERY_REARM_PCT = 25.0

ALARM_EVENTS: dict[str, EventKind] = {
    Alarm.TAMPER: EventKind.TAMPER,
    Alarm.CASE_OPEN: EventKind.CASE_OPEN,
    Alarm.POWER_CUT: EventKind.POWER_CUT,
    Alarm.SOS: EventKind.SOS,
}
_LEVELS = {"ok": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class HealthState:
    """Alarms active in the last message, and the battery level already reported."""

    active: frozenset[str] = frozenset()
    battery: str = "ok"


def _battery_level(pct: float) -> str:
    if pct <= BATTERY_CRITICAL_PCT:
        return "critical"
    if pct <= BATTERY_WARNING_PCT:
        return "warning"
    return "ok"


def step_health(
    state: HealthState, fix: Fix, person_id: int | None
) -> tuple[HealthState, list[Event]]:
    """Apply one message's alarms and battery level; return the new state and events."""
    events: list[Event] = []
    for alarm in sorted(fix.alarms - state.active):
        kind = ALARM_EVENTS.get(alarm)
        if kind is not None:
            events.append(
                make_event(
                    kind,
                    fix.fix_time,
                    fix.device_id,
                    alarm,
                    person_id=person_id,
                    device_id=fix.device_id,
                    data={"alarm": alarm, "lat": fix.lat, "lon": fix.lon}
                    if fix.valid
                    else {"alarm": alarm},
                )
            )
    battery = state.battery
    reported_low = Alarm.LOW_BATTERY in fix.alarms and Alarm.LOW_BATTERY not in state.active
    if fix.battery_pct is not None:
        level = _battery_level(fix.battery_pct)
        if _LEVELS[level] > _LEVELS[battery]:
            battery = level
            events.append(
                make_event(
                    EventKind.LOW_BATTERY,
                    fix.fix_time,
                    fix.device_id,
                    level,
                    person_id=person_id,
                    device_id=fix.device_id,
                    data={"severity": level, "battery_pct": fix.battery_pct},
                )
            )
        elif fix.battery_pct > BATTERY_REARM_PCT:
            battery = "ok"
    elif reported_low and battery == "ok":
        battery = "warning"
        events.append(
            make_event(
                EventKind.LOW_BATTERY,
                fix.fix_time,
                fix.device_id,
                "warning",
                person_id=person_id,
                device_id=fix.device_id,
                data={"severity": "warning", "battery_pct": None},
            )
        )
    return HealthState(frozenset(fix.alarms), battery), events
