"""Settings: every field from a ``BANGPAE_*`` environment variable or a CLI flag."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bangpae.domain.retention import Policy as RetentionPolicy


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
    tcp_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes serving the GT06 and H02 listeners (0: the main process). "
        "Each reads, decodes and acknowledges on a core of its own and holds no database "
        "or keys; fixes are still decided and stored by the main process's one writer.",
    )
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
    data_keys: SecretStr | None = Field(
        None,
        description="Comma-separated Fernet keys, newest first, encrypting phone numbers "
        "and order zones at rest; default the data-keys file in the data dir (made on "
        "first start). Every process opening the database needs the same keys.",
    )
    retention_days: int = Field(
        90, ge=1, description="Fixes older than this are purged, except legal holds."
    )
    retention_events_days: int = Field(
        365, ge=1, description="Events are purged this long after their order ends."
    )
    retention_incidents_days: int = Field(
        365,
        ge=1,
        description="Resolved incidents (with their timeline) are purged this long after "
        "their order ends and their last activity.",
    )
    retention_handoffs_days: int = Field(
        365, ge=1, description="Police hand-offs are purged this long after they were closed."
    )
    retention_notices_days: int = Field(
        90, ge=1, description="Notices to victims and staff are purged this long after sending."
    )
    retention_signins_days: int = Field(
        90,
        ge=1,
        description="Ended sessions and sign-in attempts are purged this long after.",
    )
    retention_audit_days: int = Field(
        1825, ge=1, description="Audit records are purged this long after they were written."
    )
    retention_evidence_margin_s: float = Field(
        3600.0,
        ge=0,
        description="Fixes and events this long before and after an open or held incident "
        "are kept as its evidence.",
    )
    purge_interval_s: float = Field(
        86400.0, ge=0, description="How often serve purges data past retention (0: never)."
    )
    audit_anchor_path: Path | None = Field(
        None,
        description="Append-only file the audit chain's head is anchored to; default "
        "audit-anchors.log in the data dir.",
    )
    audit_anchor_interval_s: float = Field(
        5.0,
        ge=0,
        description="How often serve anchors the audit chain's head when it changed (0: "
        "never): records written since the last anchor could be deleted unseen.",
    )
    audit_key: SecretStr | None = Field(
        None,
        description="64 hex digits keying the audit chain and its anchors (HMAC-SHA256); "
        "default the audit-key file in the data dir (made on first start). Keep it where "
        "the database's users cannot read it.",
    )
    audit_witness: str = Field(
        "",
        max_length=1000,
        description="Where each anchor line is also sent: syslog, or a file path outside "
        "the data dir (empty: nowhere).",
    )

    access_policy: Path | None = Field(
        None,
        description="The access policy file (TOML): who may read whose positions, for "
        "which purpose, on which basis; default the one shipped with bangpae.",
    )

    def resolved_anchor_path(self) -> Path:
        """Where the audit chain's head is anchored, defaulting to the data dir."""
        return self.audit_anchor_path or self.data_dir / "audit-anchors.log"

    def retention_policy(self) -> RetentionPolicy:
        """The retention policy these settings describe."""
        return RetentionPolicy(
            fixes_days=self.retention_days,
            events_days=self.retention_events_days,
            incidents_days=self.retention_incidents_days,
            handoffs_days=self.retention_handoffs_days,
            notices_days=self.retention_notices_days,
            signins_days=self.retention_signins_days,
            audit_days=self.retention_audit_days,
            evidence_margin_s=self.retention_evidence_margin_s,
        )

    token_ttl_s: int = Field(900, ge=60, le=86400, description="Lifetime of an access token.")
    session_ttl_staff_s: int = Field(
        12 * 3600,
        ge=300,
        le=7 * 86400,
        description="Lifetime of a sign-in (its refresh tokens) for staff: about one shift.",
    )
    session_ttl_s: int = Field(
        30 * 86400,
        ge=300,
        le=90 * 86400,
        description="Lifetime of a sign-in for victims, offenders and field officers.",
    )
    require_totp_for_staff: bool = Field(
        True,
        description="Staff (every role but victim, offender and field_officer) must sign in "
        "with a TOTP code; until they enrol one, their token only lets them enrol.",
    )
    login_max_failures: int = Field(
        5, ge=1, le=100, description="Failed sign-ins for one user name that lock it."
    )
    login_ip_max_failures: int = Field(
        20, ge=1, le=10000, description="Failed sign-ins from one address that block it."
    )
    login_window_s: float = Field(
        900.0, gt=0, le=86400, description="The window those failures are counted in."
    )
    login_lockout_s: float = Field(
        900.0, gt=0, le=86400, description="How long a lock lasts after the last failure."
    )
    tick_s: float = Field(
        1.0, gt=0, le=60, description="How often timers (offline, stale) are checked."
    )
    stream_heartbeat_s: float | None = Field(
        None,
        gt=0,
        le=40,
        description="Her live stream sends at least this often, a heartbeat when it has "
        "nothing else (unset: 20 s); her app takes 45 s of silence for a dead link.",
    )
    tile_url: str = Field(
        "",
        max_length=300,
        description="An external raster tile server drawn over the offline base map "
        "({z}/{x}/{y}); empty (the default): none. A tile server learns which area is "
        "viewed: prefer a PMTiles archive served by bangpae (pmtiles_path). docs/maps.md.",
    )
    pmtiles_path: Path | None = Field(
        None,
        description="A PMTiles archive of street maps (vector, Protomaps basemap layers) that "
        "bangpae serves by byte ranges at /basemap/streets.pmtiles; unset: "
        "DATA_DIR/maps/streets.pmtiles if that file exists. docs/maps.md.",
    )

    control_room_phone: str = Field(
        "",
        max_length=32,
        pattern=r"^(\+?[0-9 ()-]*[0-9][0-9 ()-]*)?$",
        description="The control room's telephone number, for the field app's call button "
        "(digits, spaces, ( ) - and a leading +); empty: no call button.",
    )

    @field_validator("tile_url")
    @classmethod
    def _tiles(cls, v: str) -> str:
        if v and not (v.startswith("https://") or v.startswith("http://127.0.0.1")):
            raise ValueError("tile_url must be https:// (or a loopback server), or empty")
        if v and not all(k in v for k in ("{z}", "{x}", "{y}")):
            raise ValueError("tile_url needs {z}, {x} and {y}")
        return v

    def resolved_pmtiles_path(self) -> Path:
        """Where the street map archive is looked for."""
        return self.pmtiles_path or self.data_dir / "maps" / "streets.pmtiles"

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

    api_docs: bool = Field(True, description="Serve the API explorer (Swagger UI) at /api/v1/docs.")
    allow_keyless_devices: bool = Field(
        False,
        description="Accept OsmAnd and OwnTracks fixes from devices registered without a key. "
        "Off: anyone who knew a device's identifier could move that person on the map.",
    )
    tracker_ack_delay_s: float = Field(
        0.1,
        ge=0,
        le=5,
        description="A GT06 or H02 tracker's fix is acknowledged once stored and no sooner "
        "than this after it arrived, so that how long storing took (which can depend on "
        "the other party) does not show; 0: as soon as stored.",
    )
    pin_answer_floor_s: float = Field(
        0.5,
        ge=0,
        le=5,
        description="An answer after one of her PINs was checked comes no sooner than this "
        "after the check: her duress PIN records a silent SOS first, and the time of the "
        "answer must not say which PIN it was (docs/sos.md).",
    )
    device_failure_delay_s: float = Field(
        1.0,
        ge=0,
        le=10,
        description="A refused device identification (unknown device, wrong key, too many "
        "failures) is answered this late: a client that waits for its answers is slowed "
        "to one guess a second per connection, at the cost of a sleeping request.",
    )
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

    # -- connection budgets (docs/robustness.md) ----------------------------------------
    # Each listener holds at most so many connections, and so many from one address (an
    # IPv6 /64); one over either cap is closed as soon as it is accepted. serve fits the
    # caps in the open-files limit (raised to the hard limit at start) with a quarter of
    # it, at least 256, left for the database, logs and outgoing calls: defaults that do
    # not fit shrink in proportion, explicit ones that do not fit stop the start. With
    # intake workers, each worker holds an equal share (rounded up) of the GT06 and H02 caps.

    api_max_connections: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Connections the API listener holds at most: the victims' apps (a "
        "stream and a few requests each), the consoles, OwnTracks phones, police links.",
    )
    api_max_per_address: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="API connections from one address at most: a browser opens up to six "
        "and a stream, so about a dozen consoles of a control room behind one NAT.",
    )
    osmand_max_connections: int = Field(
        2000, ge=1, le=1_000_000, description="Connections the OsmAnd listener holds at most."
    )
    osmand_max_per_address: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="OsmAnd connections from one address at most: phones and trackers on "
        "mobile networks share an address behind the carrier's NAT.",
    )
    gt06_max_connections: int = Field(
        8000,
        ge=1,
        le=1_000_000,
        description="Connections the GT06 listener holds at most: one per tracker, and "
        "for a while an older one too when a tracker reconnects without closing it.",
    )
    gt06_max_per_address: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="GT06 connections from one address at most (trackers behind one "
        "carrier NAT: raise it to the fleet when all come through one gateway).",
    )
    h02_max_connections: int = Field(
        8000, ge=1, le=1_000_000, description="Connections the H02 listener holds at most."
    )
    h02_max_per_address: int = Field(
        500, ge=1, le=1_000_000, description="H02 connections from one address at most."
    )
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="An HTTP connection that has not sent a whole request head this long "
        "after connecting (or after the first byte of its next request) is closed.",
    )
    http_body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="An HTTP request whose body has not all arrived this long after its "
        "head is dropped with its connection.",
    )
    http_idle_timeout_s: int = Field(
        5,
        ge=1,
        le=300,
        description="An HTTP connection idle this long between requests is closed (keep-alive).",
    )
    tracker_login_timeout_s: float = Field(
        60.0,
        gt=0,
        le=600,
        description="A GT06 or H02 connection that has not named a registered tracker in "
        "a valid first frame this long after connecting is closed; once bound it may stay "
        "silent for ten minutes. Four times the 15 s reporting interval every tracker is "
        "told at login and keeps across restarts.",
    )
    trusted_proxies: str = Field(
        "",
        max_length=2000,
        description="Comma-separated addresses or CIDRs of reverse proxies in front of the "
        "HTTP listeners whose X-Forwarded-For and X-Forwarded-Proto are believed (empty: "
        "none; the connecting address is the client's). Their connections are exempt from "
        "the per-address caps: a proxy must hold each client to its own.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str) -> str:
        for part in filter(None, (x.strip() for x in v.split(","))):
            if part == "*":
                raise ValueError("trusted_proxies: '*' would let any client choose its address")
            ipaddress.ip_network(part, strict=False)
        return v

    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The trusted reverse proxies as parsed networks (empty: none)."""
        return [
            ipaddress.ip_network(x.strip(), strict=False)
            for x in self.trusted_proxies.split(",")
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
        description="Where notices to victims' phones go when no SMSC is configured "
        "(BANGPAE_SMS_URL unset): log (the log records that a text was due, masked "
        "number and length, never its words) or off.",
    )
    sms_url: SecretStr | None = Field(
        None,
        description="The SMSC texts to her phone go to, over SMPP 3.4: "
        "smpp://system_id:password@host:port?source=BANGPAE&tls=0 (docs/sms.md). "
        "Unset: the log sink of sms_gateway. A secret: never logged.",
    )
    sms_max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts to submit a text before it is recorded as failed."
    )
    sms_retry_base_s: float = Field(
        5.0, gt=0, le=300, description="Wait before a text's second attempt; doubles each time."
    )
    sms_submit_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="An attempt the SMSC has not answered in this long (no bind, a lost "
        "answer) counts as failed.",
    )
    sms_enquire_link_s: float = Field(
        30.0, ge=1, le=600, description="Idle time after which the bind is checked (enquire_link)."
    )
    sms_reconnect_min_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="First wait before binding again after a lost bind; doubles up to 32 times it.",
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
