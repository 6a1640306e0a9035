"""Device health: alarms, battery, position jumps and silence, each raised once per episode.

- **Alarms** (tamper, case open, power cut, SOS) are raised on their rising edge:
  the first message that carries one. The alarm re-arms when a message arrives
  without it (and, if ``alarm_rearm_s`` is set, at least that long after the last
  message that carried it, for devices that interleave plain position packets
  between repeats of one alarm). A device repeating an alarm in every message
  raises one event, not hundreds.
- **Battery**: ``low_battery`` with severity ``warning`` at or below 20 %,
  ``critical`` at or below 10 %, each once per discharge; both re-arm after a
  recharge above 25 %. A ``low_battery`` alarm without a percentage counts as a
  warning.
- **Position jump**: the implied speed between this valid fix and the previous
  one, after allowing for both reported accuracies (unknown counts 25 m, not
  capped: a coarse fix may legitimately sit far off), ``(d - a1 - a2) / dt``,
  above 250 km/h. The jumped fix is reported; consecutive jumping fixes (an
  outlier and the fix that comes back from it, or a spoofed track) make one
  episode.
- **Timers**: ``offline`` when no message at all has been received for
  ``offline_after_s`` since the last one's receipt; ``no_fix`` when messages keep
  coming but none has had a GPS fix for ``no_fix_after_s`` since the last valid
  fix (or the first message, if there never was one). Each once per episode:
  any message re-arms ``offline``, a valid fix re-arms ``no_fix``.

Messages not newer than the newest applied one (replays, store-and-forward
uploads) only prove the device is alive; their alarms belong to the
retrospective evaluation (:func:`bangpae.domain.retro.evaluate_late_alarms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from bangpae.domain import geodesy
from bangpae.domain.model import ACCURACY_UNKNOWN_M, Alarm, Event, EventKind, Fix, make_event

BATTERY_WARNING_PCT = 20.0
BATTERY_CRITICAL_PCT = 10.0
BATTERY_REARM_PCT = 25.0
# 250 km/h: faster than anything on the ground an ankle monitor's wearer can do.
JUMP_SPEED_MPS = 250.0 / 3.6
OFFLINE_AFTER_S = 300.0
NO_FIX_AFTER_S = 300.0

ALARM_EVENTS: dict[str, EventKind] = {
    Alarm.TAMPER: EventKind.TAMPER,
    Alarm.CASE_OPEN: EventKind.CASE_OPEN,
    Alarm.POWER_CUT: EventKind.POWER_CUT,
    Alarm.SOS: EventKind.SOS,
    Alarm.SOS_SILENT: EventKind.SOS,
}
_LEVELS = {"ok": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """The limits health decisions use (defaults: docs/tiers.md)."""

    battery_warning_pct: float = BATTERY_WARNING_PCT
    battery_critical_pct: float = BATTERY_CRITICAL_PCT
    battery_rearm_pct: float = BATTERY_REARM_PCT
    jump_speed_mps: float = JUMP_SPEED_MPS
    alarm_rearm_s: float = 0.0


DEFAULT_THRESHOLDS = HealthThresholds()


@dataclass(frozen=True, slots=True)
class HealthState:
    """What one device's health decisions remember between its messages."""

    device_id: int | None = None
    person_id: int | None = None
    active: frozenset[str] = frozenset()  # alarms of the episodes in progress
    alarm_seen: tuple[tuple[str, float], ...] = ()  # last fix time each active alarm was seen
    battery: str = "ok"  # the battery level already reported: ok, warning, critical
    newest_fix_time: float | None = None  # newest applied message (replays and late ones)
    last_valid: Fix | None = None  # newest valid fix, the reference for jumps
    jumping: bool = False  # the last valid fix was a jump (episode in progress)
    last_message_at: float | None = None  # receipt time of the newest message of any kind
    valid_since_ref: float | None = None  # receipt of the last valid fix, or of the first message
    without_fix_since: float | None = None  # receipt of the first message without GPS since
    offline_reported: bool = False
    no_fix_reported: bool = False


def battery_level(pct: float, thresholds: HealthThresholds = DEFAULT_THRESHOLDS) -> str:
    """``ok``, ``warning`` or ``critical`` for a battery percentage."""
    if pct <= thresholds.battery_critical_pct:
        return "critical"
    if pct <= thresholds.battery_warning_pct:
        return "warning"
    return "ok"


def implied_speed_mps(previous: Fix, fix: Fix) -> float | None:
    """Speed needed between two valid fixes once both accuracies are allowed for (None: dt <= 0)."""
    dt = fix.fix_time - previous.fix_time
    if dt <= 0:
        return None
    d = geodesy.geodesic_distance_m(previous.lat, previous.lon, fix.lat, fix.lon)
    slack = _reported_accuracy(previous) + _reported_accuracy(fix)
    return max(d - slack, 0.0) / dt


def _reported_accuracy(fix: Fix) -> float:
    a = fix.accuracy_m
    return ACCURACY_UNKNOWN_M if a is None or math.isnan(a) else max(a, 0.0)


def step_health(
    state: HealthState,
    fix: Fix,
    now: float,
    thresholds: HealthThresholds = DEFAULT_THRESHOLDS,
    *,
    person_id: int | None = None,
) -> tuple[HealthState, list[Event]]:
    """Apply one message of a device: alarms, battery and jumps; return the new state and events.

    ``now`` is when the message is processed; its receipt time is ``fix.received_at``
    when known, else ``now``.
    """
    received = fix.received_at if fix.received_at is not None else now
    pid = person_id if person_id is not None else state.person_id
    last_msg = received if state.last_message_at is None else max(state.last_message_at, received)
    alive = replace(
        state,
        device_id=fix.device_id,
        person_id=pid,
        last_message_at=last_msg,
        offline_reported=state.offline_reported and last_msg == state.last_message_at,
        valid_since_ref=received if state.valid_since_ref is None else state.valid_since_ref,
    )
    if state.newest_fix_time is not None and fix.fix_time <= state.newest_fix_time:
        return alive, []  # a replay or a late upload: alive, nothing new decided

    def event(kind: EventKind, *cause: object, data: dict[str, object]) -> Event:
        return make_event(
            kind,
            fix.fix_time,
            fix.device_id,
            *cause,
            person_id=pid,
            device_id=fix.device_id,
            data=data,
        )

    where: dict[str, object] = {"lat": fix.lat, "lon": fix.lon} if fix.valid else {}
    events: list[Event] = []

    # Alarms: rising edges only.
    seen = dict(state.alarm_seen)
    active = set(state.active)
    for alarm in list(active):
        quiet = fix.fix_time - seen.get(alarm, -math.inf) >= thresholds.alarm_rearm_s
        if alarm not in fix.alarms and quiet:
            active.discard(alarm)
            seen.pop(alarm, None)
    for alarm in sorted(fix.alarms):
        kind = ALARM_EVENTS.get(alarm)
        if kind is not None and alarm not in active:
            events.append(event(kind, alarm, data={"alarm": alarm, **where}))
        active.add(alarm)
        seen[alarm] = fix.fix_time

    # Battery: each level once per discharge.
    battery = state.battery
    if fix.battery_pct is not None and not math.isnan(fix.battery_pct):
        level = battery_level(fix.battery_pct, thresholds)
        if _LEVELS[level] > _LEVELS[battery]:
            battery = level
            data = {"severity": level, "battery_pct": fix.battery_pct}
            events.append(event(EventKind.LOW_BATTERY, level, data=data))
        elif fix.battery_pct > thresholds.battery_rearm_pct:
            battery = "ok"
    elif Alarm.LOW_BATTERY in fix.alarms and battery == "ok":
        battery = "warning"
        data = {"severity": "warning", "battery_pct": None}
        events.append(event(EventKind.LOW_BATTERY, "warning", data=data))

    # Position jump against the previous valid fix; GPS presence for the no-fix timer.
    last_valid, jumping = state.last_valid, state.jumping
    valid_ref, without_fix_since = alive.valid_since_ref, state.without_fix_since
    no_fix_reported = False
    if fix.valid:
        jumped = False
        if last_valid is not None:
            speed = implied_speed_mps(last_valid, fix)
            jumped = speed is not None and speed > thresholds.jump_speed_mps
            if jumped and not jumping:
                dist = geodesy.geodesic_distance_m(last_valid.lat, last_valid.lon, fix.lat, fix.lon)
                data = {
                    "implied_speed_mps": round(speed or 0.0, 1),
                    "distance_m": round(dist, 1),
                    "seconds": round(fix.fix_time - last_valid.fix_time, 3),
                    "from_fix_time": last_valid.fix_time,
                    **where,
                }
                events.append(event(EventKind.POSITION_JUMP, data=data))
        last_valid, jumping = fix, jumped
        valid_ref, without_fix_since = received, None
    else:
        if without_fix_since is None:
            without_fix_since = received
        no_fix_reported = state.no_fix_reported

    new = replace(
        alive,
        active=frozenset(active),
        alarm_seen=tuple(sorted(seen.items())),
        battery=battery,
        newest_fix_time=fix.fix_time,
        last_valid=last_valid,
        jumping=jumping,
        valid_since_ref=valid_ref,
        without_fix_since=without_fix_since,
        no_fix_reported=no_fix_reported,
    )
    return new, events


def _offline_deadline(state: HealthState, offline_after_s: float) -> float | None:
    if state.last_message_at is None or state.offline_reported:
        return None
    return state.last_message_at + offline_after_s


def _no_fix_deadline(state: HealthState, no_fix_after_s: float) -> float | None:
    since = state.without_fix_since
    if since is None or state.no_fix_reported or state.valid_since_ref is None:
        return None
    # Not before the first message without a fix: silence alone is ``offline``'s to report.
    return max(state.valid_since_ref + no_fix_after_s, since)


def next_deadline(
    state: HealthState,
    offline_after_s: float = OFFLINE_AFTER_S,
    no_fix_after_s: float = NO_FIX_AFTER_S,
) -> float | None:
    """When :func:`check_timers` may next raise something for this device, or None."""
    times = [
        t
        for t in (
            _offline_deadline(state, offline_after_s),
            _no_fix_deadline(state, no_fix_after_s),
        )
        if t is not None
    ]
    return min(times, default=None)


def check_timers(
    state: HealthState,
    now: float,
    offline_after_s: float = OFFLINE_AFTER_S,
    no_fix_after_s: float = NO_FIX_AFTER_S,
) -> tuple[HealthState, list[Event]]:
    """Raise ``offline`` and ``no_fix`` whose deadlines have passed at ``now``, once per episode.

    Each event is dated at its deadline, not at ``now``, so a late tick gives the same id.
    """
    events: list[Event] = []
    new = state
    due = _offline_deadline(state, offline_after_s)
    if due is not None and now > due:
        events.append(
            make_event(
                EventKind.OFFLINE,
                due,
                state.device_id,
                "offline",
                state.last_message_at,
                person_id=state.person_id,
                device_id=state.device_id,
                data={"last_message_at": state.last_message_at, "after_s": offline_after_s},
            )
        )
        new = replace(new, offline_reported=True)
    due = _no_fix_deadline(state, no_fix_after_s)
    if due is not None and now > due:
        last = state.last_valid.fix_time if state.last_valid is not None else None
        events.append(
            make_event(
                EventKind.NO_FIX,
                due,
                state.device_id,
                "no_fix",
                state.valid_since_ref,
                person_id=state.person_id,
                device_id=state.device_id,
                data={"last_valid_fix_time": last, "after_s": no_fix_after_s},
            )
        )
        new = replace(new, no_fix_reported=True)
    return new, events
