"""Administration: ``admin create-user``, ``admin clear-pins`` and ``set-contact``, audited."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bangpae.cli.options import (
    Subcommands,
    add_data_options,
    no_database,
    settings_from,
    store_for,
)
from bangpae.domain.audit import AuditEntry
from bangpae.services.auth import ROLES


def add_admin(sub: Subcommands) -> None:
    """``admin``: logins, and her PINs cleared when she forgot them."""
    a = sub.add_parser("admin", help="administration")
    asub = a.add_subparsers(dest="admin_command", required=True)
    cu = asub.add_parser("create-user", help="create a login")
    add_data_options(cu)
    cu.add_argument("--username", required=True)
    cu.add_argument("--password", required=True)
    cu.add_argument("--role", required=True, choices=sorted(ROLES))
    cu.add_argument("--person-id", type=int)
    cu.add_argument(
        "--init",
        action="store_true",
        help="make the data directory and database when there are none (a new installation)",
    )
    cu.set_defaults(handler=_create_user)
    cp = asub.add_parser(
        "clear-pins", help="clear a protected person's app and duress PINs (a forgotten PIN)"
    )
    add_data_options(cp)
    cp.add_argument("--username", required=True)
    cp.add_argument("--reason", required=True, help="why, for the audit trail")
    cp.set_defaults(handler=_clear_pins)


def add_set_contact(sub: Subcommands) -> None:
    """``set-contact``: a protected person's phone number and choices of texts."""
    sc = sub.add_parser(
        "set-contact", help="a protected person's phone number for texts (docs/sms.md), audited"
    )
    add_data_options(sc)
    sc.add_argument("--person", type=int, required=True, help="the protected person's id")
    sc.add_argument(
        "--phone", required=True, help="+821012345678 or 010-1234-5678; 'none' to remove it"
    )
    sc.add_argument("--sms", choices=("on", "off"), help="texts on or off (default: as they are)")
    sc.add_argument("--lang", choices=("ko", "en"), help="the texts' language (default: as it is)")
    sc.set_defaults(handler=_set_contact)


def _audit_cli(store: Any, action: str, subject: str, fields: list[str]) -> None:
    """The audit record of an administration step taken from the command line."""
    from bangpae.adapters.clock import SystemClock

    store.audit_append(
        AuditEntry(
            actor="cli",
            role="admin",
            action=action,
            subject=subject,
            purpose="administration",
            fields=fields,
            at=SystemClock().now(),
        )
    )


def add_login(
    store: Any, username: str, password_hash: str, role: str, person_id: int | None
) -> int:
    """Add a login with its audit record, as ``admin create-user`` does; its id."""
    uid = int(store.add_user(username, password_hash, role, person_id))
    _audit_cli(store, "create_user", f"user:{uid}", ["username", "role"])
    return uid


def _create_user(args: argparse.Namespace) -> int:
    from bangpae.domain.errors import Conflict
    from bangpae.services.auth import WeakPassword, new_password_hash

    settings = settings_from(args)
    try:
        password_hash = new_password_hash(args.password, args.username)
    except WeakPassword as exc:
        print(f"password: {exc}", file=sys.stderr)
        return 2
    missing = None if args.init else no_database(settings)
    if missing is not None:  # a mistyped --data-dir must not become an empty installation
        print(f"bangpae admin create-user: {missing}", file=sys.stderr)
        return 2
    store = store_for(settings, create=True)
    try:
        uid = add_login(store, args.username, password_hash, args.role, args.person_id)
    except Conflict:
        print(f"user {args.username!r} exists already", file=sys.stderr)
        return 1
    print(json.dumps({"id": uid, "username": args.username, "role": args.role}))
    store.close()
    return 0


def _clear_pins(args: argparse.Namespace) -> int:
    """Her PINs cleared by the control centre when she forgot her app PIN (docs/sos.md):
    only from the command line, after the centre has verified it is her."""
    settings = settings_from(args)
    missing = no_database(settings)
    if missing is not None:
        print(f"bangpae admin clear-pins: {missing}", file=sys.stderr)
        return 2
    if not args.reason.strip():
        print("--reason: say why, for the audit trail", file=sys.stderr)
        return 2
    store = store_for(settings, create=False)
    try:
        user = store.get_user_by_name(args.username)
        if user is None or user.role != "victim":
            print(f"no protected person's login {args.username!r}", file=sys.stderr)
            return 1
        store.set_pins(user.id, None, None)
        fields = ["app_pin=cleared", "duress_pin=cleared", f"reason={args.reason[:200]}"]
        _audit_cli(store, "clear_pins", f"user:{user.id}", fields)
    finally:
        store.close()
    print(json.dumps({"username": args.username, "pins": "cleared"}))
    return 0


def _set_contact(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.api.routes.notices import e164
    from bangpae.domain.errors import Invalid, NotFound
    from bangpae.domain.notices import sms_prefs

    try:
        phone = None if args.phone.strip().lower() in ("", "none") else e164(args.phone)
    except ValueError as exc:
        print(f"set-contact: {exc}", file=sys.stderr)
        return 2
    store = store_for(settings_from(args))
    try:
        now = SystemClock().now()
        contact = store.contact(args.person)
        if contact is None:
            raise NotFound(f"person {args.person} not found")
        orders = [o for o in store.orders_for_person(args.person) if o.victim_id == args.person]
        prefs = sms_prefs(contact.sms_prefs, orders[0].profile if orders else "kr").as_dict()
        if args.sms is not None:
            prefs["enabled"] = args.sms == "on"
        if args.lang is not None:
            prefs["lang"] = args.lang
        changed = store.set_contact(args.person, phone, prefs)
        store.audit_append(
            AuditEntry(  # who and when; never the number itself
                actor="cli",
                role="admin",
                action="contact.set",
                subject=f"person:{args.person}",
                purpose="administration",
                fields=(["phone"] if changed else []) + ["sms", "lang"],
                at=now,
            )
        )
    except (Invalid, NotFound) as exc:
        print(f"set-contact: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"person": args.person, "phone_set": phone is not None, "sms": prefs}))
    return 0
