"""Tables of the store (SQLAlchemy Core); Alembic migrations are generated from these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

people = Table(
    "people",
    metadata,
    Column("id", Id, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    # for the SMS/voice gateway (schema 0005)
    Column("phone", Text),  # encrypted at rest: longer than the number
    # her SMS choices (schema 0009): {"enabled": bool, "tiers": [...], "lang": "ko"|"en"};
    # None: the defaults of her order's profile (domain/sms.py)
    Column("sms_prefs", JSON),
    Column("created_at", Float, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Id, primary_key=True),
    Column("identifier", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("protocol", String(16), nullable=False),
    Column("person_id", Id, ForeignKey("people.id"), nullable=False),
    Column("secret_hash", String(200)),
    # GT06 firmware known to send wrong CRCs: accept its frames anyway (off by default).
    Column("lenient_crc", Boolean, nullable=False, server_default=sa_false()),
    Column("created_at", Float, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True),
    Column("offender_id", Id, ForeignKey("people.id"), nullable=False),
    Column("victim_id", Id, ForeignKey("people.id"), nullable=False),
    Column("notify_radius_m", Float, nullable=False),
    Column("reveal_radius_m", Float, nullable=False),
    Column("keep_away_m", Float, nullable=False),
    Column("hysteresis_m", Float, nullable=False),
    Column("zones", JSON, nullable=False),
    Column("curfews", JSON, nullable=False),
    Column("stale_after_s", Float, nullable=False),
    Column("offline_after_s", Float, nullable=False),
    Column("no_fix_after_s", Float, nullable=False),
    Column("valid_from", Float),
    Column("valid_until", Float),
    Column("profile", String(8), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# A position record in plaintext (first byte 0: written by a store without data keys), as
# SQL per dialect; the partial index ix_fixes_plain holds these rows only, so a store with
# keys finds the ones it must seal without reading the whole table.
PLAIN_POSITION = {
    "sqlite": "substr(position, 1, 1) = x'00'",
    "postgresql": "get_byte(position, 0) = 0",
}

fixes = Table(
    "fixes",
    metadata,
    Column("id", Id, primary_key=True),
    Column("device_id", Id, ForeignKey("devices.id"), nullable=False),
    Column("fix_time", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    # lat, lon, speed and heading, sealed with the data keys and bound to the row's id,
    # device and fix time (schema 0008; adapters/store/positions.py)
    Column("position", LargeBinary, nullable=False),
    Column("accuracy_m", Float),
    Column("battery_pct", Float),
    Column("valid", Boolean, nullable=False),
    Column("alarms", String(200), nullable=False, default=""),
    Column("late", Boolean, nullable=False, default=False),
    Column("hold", Boolean, nullable=False, default=False),
    Index("ix_fixes_device_time", "device_id", "fix_time"),
    Index("ix_fixes_device_id", "device_id", "id"),
    Index(
        "ix_fixes_plain",
        "id",
        sqlite_where=text(PLAIN_POSITION["sqlite"]),
        postgresql_where=text(PLAIN_POSITION["postgresql"]),
    ),
)

events = Table(
    "events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("order_id", Id),
    Column("person_id", Id),
    Column("device_id", Id),
    Column("tier_from", Integer),
    Column("tier_to", Integer),
    Column("distance_m", Float),
    Column("late", Boolean, nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_events_order_kind", "order_id", "kind", "at"),
)

# Committed events whose reactions (notices, pursuit) have not all run yet: written in the
# transaction that stores the event, deleted once the reactions have run, so a restart
# resumes them from here (docs/architecture.md, "Reactions").
reactions_due = Table(
    "reactions_due",
    metadata,
    Column("seq", Id, primary_key=True),
    Column("event_id", String(32), nullable=False, unique=True),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Id, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("order_id", Id),
    Column("person_id", Id),
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("late", Boolean, nullable=False, default=False),
    # she gave her duress PIN (docs/sos.md): no call-back, shown prominently (schema 0010)
    Column("duress", Boolean, nullable=False, server_default=sa_false()),
    Index("ix_incidents_open", "status", "order_id", "person_id", "kind"),
)

incident_entries = Table(
    "incident_entries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("at", Float, nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("event_id", String(32)),
    Column("data", JSON, nullable=False),
    UniqueConstraint("incident_id", "event_id", name="uq_incident_entries_event"),
    # replays look an event up by id alone, whatever incident it joined
    Index("ix_incident_entries_event_id", "event_id"),
)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("person_id", Id, ForeignKey("people.id")),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    # a protected person's app-lock and duress PINs, argon2 hashes (docs/sos.md, schema 0010)
    Column("app_pin_hash", String(200)),
    Column("duress_pin_hash", String(200)),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("purpose", String(200), nullable=False),
    Column("fields", Text, nullable=False),
    Column("request_id", String(64)),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # HMAC-SHA256 of ``hash`` under the audit key (schema 0007); NULL for records written
    # before the key existed (see docs/audit-log.md)
    Column("mac", String(64)),
)

# -- police hand-off (schema 0004) ------------------------------------------------------

handoffs = Table(
    "handoffs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    # pending, delivered, failed (every attempt failed), logged (a log-sink channel)
    Column("status", String(16), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("summary", JSON, nullable=False),
    # SHA-256 of the live-position token, to find the hand-off a link belongs to
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("closed_at", Float),
    Column("closed_by", String(100)),
    Index("ix_handoffs_incident", "incident_id", "id"),
)

handoff_attempts = Table(
    "handoff_attempts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("handoff_id", Id, ForeignKey("handoffs.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("http_status", Integer),
    Column("error", Text, nullable=False, default=""),
    UniqueConstraint("handoff_id", "attempt", name="uq_handoff_attempts_attempt"),
)

# -- notices to victims and staff, Web Push subscriptions (schema 0005) ----------------

notices = Table(
    "notices",
    metadata,
    Column("id", Id, primary_key=True),
    Column("at", Float, nullable=False),
    Column("order_id", Id, ForeignKey("orders.id")),
    # victim: one person; staff: every user of a role
    Column("audience", String(16), nullable=False),
    Column("person_id", Id, ForeignKey("people.id")),
    Column("role", String(16)),
    Column("kind", String(32), nullable=False),
    Column("priority", String(16), nullable=False),
    # notices with the same key inside the kind's window are sent once
    Column("dedup_key", String(200), nullable=False),
    # {"ko": ..., "en": ...}: never a position or a distance (lock screens are seen by others)
    Column("text", JSON, nullable=False),
    # channel -> outcome, e.g. {"stream": "sent", "push": "sent 2/2", "sms": "logged"}
    Column("delivery", JSON, nullable=False),
    Index("ix_notices_dedup", "dedup_key", "at"),
    Index("ix_notices_person", "person_id", "id"),
)

# -- text messages sent by SMPP, and their delivery receipts (schema 0009) --------------

sms_messages = Table(
    "sms_messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("person_id", Id, ForeignKey("people.id"), nullable=False),
    # the notice it carries: linked when the notice is kept (it may be kept after the
    # text is queued), gone with it when notices are purged
    Column("notice_id", Id, ForeignKey("notices.id", ondelete="CASCADE")),
    Column("dedup_key", String(200), nullable=False),
    Column("notice_at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    # queued, submitted, delivered, failed, expired, undeliverable
    Column("state", String(16), nullable=False),
    Column("message_id", String(65)),  # the SMSC's id (of the last part of a long text)
    Column("parts", Integer, nullable=False, default=1),
    Column("attempts", Integer, nullable=False, default=0),
    Column("queued_at", Float, nullable=False),
    Column("submitted_at", Float),
    Column("done_at", Float),
    Column("error", String(200), nullable=False, default=""),
    Index("ix_sms_messages_message_id", "message_id"),
    Index("ix_sms_messages_person", "person_id", "kind", "queued_at"),
    Index("ix_sms_messages_notice", "dedup_key", "notice_at"),
)

push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("user_id", Id, ForeignKey("users.id"), nullable=False),
    Column("endpoint", String(1000), nullable=False, unique=True),
    Column("p256dh", String(200), nullable=False),
    Column("auth", String(64), nullable=False),
    # the language the notices are written in for this browser: ko or en
    Column("lang", String(8), nullable=False, default="ko"),
    Column("created_at", Float, nullable=False),
    Column("last_ok_at", Float),
    Column("failures", Integer, nullable=False, default=0),
)

# -- sessions and login attempts (schema 0006) -----------------------------------------

sessions = Table(
    "sessions",
    metadata,
    Column("id", Id, primary_key=True),  # the ``sid`` claim of its access tokens
    Column("user_id", Id, ForeignKey("users.id"), nullable=False),
    # full, or totp_enrol: a staff member who may only enrol a second factor
    Column("scope", String(16), nullable=False),
    # SHA-256 of the current refresh token; every refresh replaces it
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("revoked_reason", String(32)),
    Column("ip", String(64)),
    Column("user_agent", String(200)),
    Index("ix_sessions_user", "user_id", "revoked_at"),
)

# Refresh tokens already exchanged: one presented again means a copy leaked (reuse).
retired_refresh_tokens = Table(
    "retired_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", Id, ForeignKey("sessions.id"), nullable=False),
    Column("retired_at", Float, nullable=False),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("at", Float, nullable=False),
    Column("username", String(64), nullable=False),  # as typed: unknown names lock alike
    Column("ip", String(64), nullable=False),
    # ok, failed, locked (refused unchecked), totp_required (right password, no code yet),
    # unlocked (the control centre ended the locks on this name; ip "-")
    Column("outcome", String(16), nullable=False),
    Index("ix_login_attempts_username", "username", "at"),
    Index("ix_login_attempts_ip", "ip", "at"),
)

user_totp = Table(
    "user_totp",
    metadata,
    Column("user_id", Id, ForeignKey("users.id"), primary_key=True, autoincrement=False),
    Column("secret", String(200), nullable=False),  # sealed with AES-GCM, never returned
    Column("created_at", Float, nullable=False),
    Column("enabled_at", Float),  # null until confirmed with a code
    Column("last_step", BigInteger),  # the last time step accepted: a code works once
)

# -- places of refuge (schema 0011, docs/refuges.md) -------------------------------------

# Public places (police boxes, stations, 24-hour stores): not personal data, so in clear.
refuges = Table(
    "refuges",
    metadata,
    Column("id", Id, primary_key=True),
    # the feature's id in the imported file, else its kind and position: a merge updates it
    Column("ref", String(100), nullable=False, unique=True),
    Column("name_ko", String(200), nullable=False),
    Column("name_en", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("hours", String(64)),
    Column("phone", String(24)),
    Column("imported_at", Float, nullable=False),
    Index("ix_refuges_lat_lon", "lat", "lon"),  # the bounding box around her
)

# -- recordings kept as evidence of an SOS (schema 0012; docs/evidence.md) ---------------

evidence = Table(
    "evidence",
    metadata,
    Column("id", Id, primary_key=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("person_id", Id, ForeignKey("people.id"), nullable=False),  # who recorded it
    Column("uploaded_at", Float, nullable=False),
    Column("recorded_at", Float),  # as her phone said, bounded (None: not said)
    Column("content_type", String(32), nullable=False),  # sniffed from the bytes
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),  # of the bytes as received
    # the bytes, sealed with the data keys and bound to incident, person and digest
    # (adapters/store/evidence.py)
    Column("blob", LargeBinary, nullable=False),
    Column("uploaded_by", String(100), nullable=False),
    # a second upload of the same bytes (a reply lost on the way) is the same evidence
    UniqueConstraint("incident_id", "sha256", name="uq_evidence_incident_sha256"),
)
