"""Request and response shapes of the public API (schema families per resource)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

# Ids are signed 64-bit integers in the database: anything larger names nothing, and
# must be refused at the edge rather than overflow in the driver.
MAX_ID = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


class Strict(BaseModel):
    """Unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    """Credentials, with a TOTP code for users who enrolled a second factor."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    totp: str | None = Field(None, pattern=r"^\d{6}$", description="6-digit TOTP code.")


class TokenPublic(BaseModel):
    """A bearer token, and the refresh token that gets the next one (once)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    role: str
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds until the sign-in itself ends.")
    scope: Literal["full", "totp_enrol"] = Field(
        "full", description="totp_enrol: the token may only enrol a second factor."
    )


class Created(BaseModel):
    """The id of what was created (and a device's key, when the server made it)."""

    id: int
    key: str | None = Field(
        default=None,
        description="A new device's key, made by the server: shown in this reply only.",
    )


class PersonCreate(Strict):
    """A new person."""

    kind: Literal["offender", "victim", "officer"]
    name: str = Field(min_length=1, max_length=200)


class DeviceCreate(Strict):
    """A new device bound to a person."""

    identifier: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:/-]+$")
    kind: Literal["ankle_monitor", "phone", "watch"]
    protocol: Literal["osmand", "owntracks", "gt06", "h02", "api"]
    person_id: int = Field(gt=0, le=MAX_ID)
    lenient_crc: bool = Field(
        False, description="GT06 only: accept frames with a wrong CRC (known-bad firmware)."
    )
    key: str | None = Field(
        None,
        min_length=22,
        max_length=128,
        description="Device key for authenticated protocols: long and random (at least 22 "
        "characters). Leave it out and the server makes one (returned once).",
    )


class WindowIn(Strict):
    """A weekly window in the order's time zone; day 0 is Monday."""

    day: int = Field(ge=0, le=6)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")


class ZoneIn(Strict):
    """A GeoJSON Feature: Polygon, or Point with ``properties.radius_m``."""

    type: Literal["Feature"]
    geometry: dict[str, Any]
    properties: dict[str, Any] = Field(default_factory=dict)
    schedule: list[WindowIn] = Field(default_factory=list)


class OrderCreate(Strict):
    """A new protective order (defaults: docs/tiers.md)."""

    offender_id: int = Field(gt=0, le=MAX_ID)
    victim_id: int = Field(gt=0, le=MAX_ID)
    notify_radius_m: float = Field(2000.0, ge=100, le=20000)
    reveal_radius_m: float = Field(600.0, ge=50, le=10000)
    keep_away_m: float = Field(100.0, ge=10, le=10000)
    hysteresis_m: float = Field(50.0, ge=0, le=1000)
    zones: list[ZoneIn] = Field(default_factory=list)
    curfews: list[ZoneIn] = Field(default_factory=list)
    stale_after_s: float = Field(120.0, ge=10, le=3600)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    profile: Literal["kr", "fr", "es"] = "kr"
    timezone: str = Field("Asia/Seoul", max_length=64)


class NativeFix(Strict):
    """A fix in bangpae's own format."""

    device: str | None = Field(None, max_length=64)
    fix_time: datetime
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(None, ge=0, le=100000)
    speed_mps: float | None = Field(None, ge=0, le=350)
    heading_deg: float | None = Field(None, ge=0, lt=360)
    battery_pct: float | None = Field(None, ge=0, le=100)
    valid: bool = True
    alarms: list[Literal["sos", "tamper", "case_open", "power_cut", "low_battery", "vibration"]] = (
        Field(default_factory=list)
    )


class FixBatch(Strict):
    """Up to 1,000 fixes of one device."""

    fixes: list[NativeFix] = Field(min_length=1, max_length=1000)


class IncidentAction(Strict):
    """A lifecycle step with a note."""

    note: str = Field("", max_length=2000)
    officer_id: int | None = Field(None, gt=0, le=MAX_ID)
    outcome: Literal["resolved", "false_alarm"] | None = None


class IncidentPublic(BaseModel):
    """An incident in a list."""

    id: int
    kind: str
    priority: Literal["critical", "high", "normal"]
    status: str
    order_id: int | None
    person_id: int | None
    opened_at: str
    late: bool = False
    # she gave her duress PIN: do not call her back, treat as an emergency (docs/sos.md)
    duress: bool = False


class OwnLocation(Strict):
    """The holder's own position, from the browser's Geolocation API."""

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy_m: float | None = Field(None, ge=0, le=100000, allow_inf_nan=False)
    speed_mps: float | None = Field(None, ge=0, le=350, allow_inf_nan=False)
    heading_deg: float | None = Field(None, ge=0, lt=360, allow_inf_nan=False)
    battery_pct: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    fix_time: datetime | None = Field(None, description="When the position was taken (with zone).")


class SosRequest(Strict):
    """An SOS from the protected person; the position is optional (the phone may have none)."""

    lat: float | None = Field(None, ge=-90, le=90, allow_inf_nan=False)
    lon: float | None = Field(None, ge=-180, le=180, allow_inf_nan=False)
    accuracy_m: float | None = Field(None, ge=0, le=100000, allow_inf_nan=False)
    silent: bool = False


class FieldOutcome(Strict):
    """How a dispatch ended."""

    outcome: Literal["resolved", "false_alarm"]
    note: str = Field("", max_length=2000)


PinText = Annotated[str, Field(pattern=r"^[0-9]{4,8}$", description="4 to 8 digits")]


class SosCancel(Strict):
    """She says she is safe; ``pin`` is what she typed to confirm (her duress PIN, if she
    is not; docs/sos.md)."""

    pin: str | None = Field(None, max_length=8)


class PinsUpdate(Strict):
    """Her app-lock PIN and duress PIN: a field left out is kept, null clears it; the two
    must differ. ``current_pin`` is her app PIN, asked once she has one (docs/sos.md)."""

    current_pin: str | None = Field(None, max_length=8)
    app_pin: PinText | None = None
    duress_pin: PinText | None = None


class PinCheck(Strict):
    """A PIN typed at the app lock."""

    pin: str = Field(max_length=8)
