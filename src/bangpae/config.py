"""Settings: every field from a ``BANGPAE_*`` environment variable or a CLI flag."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def parse_listen(value: str, default_host: str = "0.0.0.0") -> tuple[str, int] | None:
    """Parse ``HOST:PORT``, ``:PORT`` or ``off`` into an address (None: disabled)."""
    value = value.strip()
    if value.lower() == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, :PORT or off, got {value!r}")
    return (host.strip("[]") or default_host, int(port))


# The push services of Chrome/Edge/Opera (FCM), Firefox (Mozilla), Safari (Apple), Windows.
DEFAULT_PUSH_HOSTS: tuple[str, ...] = (
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "web.push.apple.com",
    "*.push.apple.com",
    "*.notify.windows.com",
)


class Settings(BaseSettings):
    """Everything bangpae can be told; defaults are safe for one machine."""

    model_config = SettingsConfigDict(env_prefix="BANGPAE_", extra="ignore")

    data_dir: Path = Field(
        Path("./bangpae-data"), description="Where the embedded database, keys and anchors live."
    )
    http: str = Field("127.0.0.1:8080", description="API and web listener, HOST:PORT or off.")
    osmand: str = Field(":5055", description="OsmAnd / Traccar Client HTTP listener.")
    gt06: str = Field(":5023", description="GT06 TCP listener.")
    h02: str = Field(":5013", description="H02 TCP listener.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite in the data dir."
    )
    bus_url: str | None = Field(
        None, description="Event bus; default in-process, nats://... for JetStream."
    )
    mqtt_url: str | None = Field(
        None, description="MQTT broker for OwnTracks, e.g. mqtt://127.0.0.1:1883."
    )
    secret_key: str | None = Field(
        None, description="Token signing key; default a random key kept in the data dir."
    )
    retention_days: int = Field(
        90, ge=1, description="Fixes older than this are purged, except legal holds."
    )
    token_ttl_s: int = Field(900, ge=60, le=86400, description="Lifetime of an access token.")
    tick_s: float = Field(
        1.0, gt=0, le=60, description="How often timers (offline, stale) are checked."
    )
    tile_url: str = Field(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        max_length=300,
        description="Map tiles for the apps ({z}/{x}/{y}); empty: no base map. "
        "A tile server learns which area is viewed: run your own for production.",
    )

    @field_validator("tile_url")
    @classmethod
    def _tiles(cls, v: str) -> str:
        if v and not (v.startswith("https://") or v.startswith("http://127.0.0.1")):
            raise ValueError("tile_url must be https:// (or a loopback server), or empty")
        if v and not all(k in v for k in ("{z}", "{x}", "{y}")):
            raise ValueError("tile_url needs {z}, {x} and {y}")
        return v

    def tile_origin(self) -> str:
        """The scheme and host of the tile server, for the content security policy."""
        if not self.tile_url:
            return ""
        scheme, _, rest = self.tile_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @field_validator("http", "osmand", "gt06", "h02")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    device_networks: str = Field(
        "",
        description="Comma-separated CIDRs devices may connect from (empty: any), "
        "e.g. 10.8.0.0/16,127.0.0.0/8 for trackers behind a carrier APN.",
    )

    @field_validator("device_networks")
    @classmethod
    def _networks(cls, v: str) -> str:
        for part in filter(None, (x.strip() for x in v.split(","))):
            ipaddress.ip_network(part, strict=False)
        return v

    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The device networks as parsed objects (empty: every source is allowed)."""
        return [
            ipaddress.ip_network(x.strip(), strict=False)
            for x in self.device_networks.split(",")
            if x.strip()
        ]

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bangpae.sqlite').resolve()}"

    # -- control-centre response ---------------------------------------------------------

    escalate_after_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="An unacknowledged critical incident pages the supervisor this long "
        "after it opened.",
    )
    escalate_every_s: float = Field(
        60.0, gt=0, le=3600, description="Pages repeat this often until someone acknowledges."
    )
    dispatch_speed_kmh: float = Field(
        40.0, gt=0, le=300, description="Speed assumed for a field officer's travel time."
    )
    public_url: str | None = Field(
        None,
        max_length=300,
        description="Base URL the police reach this service at, for live-position links; "
        "default http://HTTP (the API listener).",
    )
    handoff_webhook_url: str | None = Field(
        None, max_length=500, description="Where police hand-offs are POSTed as signed JSON."
    )
    handoff_secret: str | None = Field(
        None,
        min_length=16,
        description="HMAC-SHA256 key signing hand-off webhooks (X-Bangpae-Signature).",
    )
    handoff_retry_base_s: float = Field(
        1.0, gt=0, le=300, description="First retry delay of a hand-off; doubles each attempt."
    )
    handoff_max_attempts: int = Field(
        6, ge=1, le=20, description="Delivery attempts of a hand-off before it is failed."
    )

    # -- notices -------------------------------------------------------------------------

    push_subject: str = Field(
        "mailto:security@bangpae.invalid",
        max_length=200,
        pattern=r"^(mailto:|https://)",
        description="The VAPID contact push services may reach the operator at.",
    )
    push_allowed_hosts: str = Field(
        ",".join(DEFAULT_PUSH_HOSTS),
        max_length=2000,
        description="Comma-separated push-service hosts a browser's subscription may point "
        "at (*.domain allowed); anything else is refused, so subscriptions cannot make the "
        "server call into its own network.",
    )
    sms_gateway: str = Field(
        "log",
        pattern=r"^(log|off)$",
        description="Where urgent notices to victims' phones go: log (the log sink a "
        "gateway picks up) or off.",
    )

    def push_hosts(self) -> list[str]:
        """The allowed push-service hosts."""
        return [h.strip() for h in self.push_allowed_hosts.split(",") if h.strip()]

    @model_validator(mode="after")
    def _signed_handoffs(self) -> Settings:
        if self.handoff_webhook_url and not self.handoff_secret:
            raise ValueError("handoff_webhook_url needs handoff_secret: hand-offs are signed")
        if self.handoff_webhook_url and not self.handoff_webhook_url.startswith(
            ("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")
        ):
            raise ValueError("handoff_webhook_url must be https:// (or a loopback server)")
        return self

    def base_url(self) -> str:
        """The URL links given to people outside the service start with."""
        if self.public_url:
            return self.public_url.rstrip("/")
        addr = parse_listen(self.http, "127.0.0.1")
        return f"http://{addr[0]}:{addr[1]}" if addr else "http://127.0.0.1:8080"
