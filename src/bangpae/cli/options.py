"""What the commands share: the data and listener options, settings from them, the store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeAlias

from bangpae.adapters.datadir import make_private_dir
from bangpae.config import Settings

# What add_subparsers returns: each module adds its commands to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    given = {
        key: value
        for key in (
            "data_dir",
            "http",
            "osmand",
            "gt06",
            "h02",
            "tcp_workers",
            "database_url",
            "bus_url",
            "mqtt_url",
            "audit_anchor_path",
        )
        if (value := getattr(args, key, None)) is not None
    }
    return Settings(**given)


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options naming the data: its directory and its database."""
    p.add_argument("--data-dir", type=Path, help="data directory (BANGPAE_DATA_DIR)")
    p.add_argument("--database-url", help="SQLAlchemy URL (BANGPAE_DATABASE_URL)")


def add_listener_options(p: argparse.ArgumentParser) -> None:
    """The options of the listeners, the event bus and the MQTT broker."""
    p.add_argument("--http", help="API listener HOST:PORT or off (BANGPAE_HTTP)")
    p.add_argument("--osmand", help="OsmAnd listener HOST:PORT or off (BANGPAE_OSMAND)")
    p.add_argument("--gt06", help="GT06 listener HOST:PORT or off (BANGPAE_GT06)")
    p.add_argument("--h02", help="H02 listener HOST:PORT or off (BANGPAE_H02)")
    p.add_argument(
        "--tcp-workers",
        type=int,
        help="processes serving the GT06 and H02 listeners, 0: in this one (BANGPAE_TCP_WORKERS)",
    )
    p.add_argument("--bus-url", help="event bus URL (BANGPAE_BUS_URL)")
    p.add_argument("--mqtt-url", help="MQTT broker for OwnTracks (BANGPAE_MQTT_URL)")


def no_database(settings: Settings) -> str | None:
    """Why there is no database to add a login to (None: there is one, or it lives on a
    server, whose business it is)."""
    from bangpae.adapters.datadir import sqlite_file

    db = sqlite_file(settings.resolved_database_url())
    if db is None or db.exists():
        return None
    demo = settings.data_dir / "demo"
    if (demo / db.name).exists():
        return (
            f"no database at {db}; the demo's is in {demo}: pass --data-dir {demo} "
            "(bangpae demo starts it afresh each time)"
        )
    return (
        f"no database at {db}: check --data-dir / BANGPAE_DATA_DIR, "
        "or pass --init to make a new installation there"
    )


def store_for(settings: Settings, create: bool = False, check_audit_key: bool = True) -> Any:
    """The migrated store these settings name, with its data keys (``create``: make the
    data dir, and the key file when there are no keys, first)."""
    from bangpae.app import open_store

    if create:
        make_private_dir(settings.data_dir)
    elif settings.database_url is None and not settings.data_dir.is_dir():
        raise SystemExit(f"no data directory at {settings.data_dir}: no database to work on")
    return open_store(settings, create=create, check_audit_key=check_audit_key)


def parse_when(value: str | None) -> float | None:
    """A time given as ISO 8601 with a zone (or Z), or as POSIX seconds."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime

    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time or POSIX seconds") from None
    if t.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (add Z or +09:00)")
    return t.timestamp()
