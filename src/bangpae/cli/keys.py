"""The data keys: ``keys rotate`` and ``keys generate``."""

from __future__ import annotations

import argparse
import json
import sys

from bangpae.cli.options import Subcommands, add_data_options, settings_from, store_for
from bangpae.domain.audit import AuditEntry


def add_keys(sub: Subcommands) -> None:
    """``keys``: rotate the data keys, or print a new one."""
    k = sub.add_parser(
        "keys", help="the data keys encrypting phone numbers, zones and positions at rest"
    )
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kr = ksub.add_parser(
        "rotate",
        help="put a new data key first in the key file, then re-encrypt every encrypted "
        "field with it (plaintext left from before encryption too), audited",
    )
    add_data_options(kr)
    kr.add_argument(
        "--no-new-key",
        action="store_true",
        help="only re-encrypt, with the newest key there is (e.g. after putting a new key "
        "first in BANGPAE_DATA_KEYS)",
    )
    kr.set_defaults(handler=_keys_rotate)
    kg = ksub.add_parser("generate", help="print a new data key (for BANGPAE_DATA_KEYS)")
    kg.set_defaults(handler=_keys_generate)


def _keys_rotate(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.adapters.crypto import DataKeyError, add_key, fingerprint
    from bangpae.app import data_cipher

    settings = settings_from(args)
    store = store_for(settings)  # refuses keys that do not open what is sealed already
    try:
        cipher, new_key = store.cipher, not args.no_new_key
        if cipher is None:  # an instance from before encryption: it gets its first key
            cipher, new_key = data_cipher(settings, create=True), True
        elif new_key:
            cipher = add_key(cipher)  # written before anything is sealed with it
        store.cipher = cipher
        counts = store.reseal_fields()
    except DataKeyError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        store.close()
        return 1
    assert cipher is not None
    newest = fingerprint(cipher.keys[0])
    store.audit_append(
        AuditEntry(
            actor="cli",
            role="admin",
            action="keys_rotate",
            subject="data-keys",
            purpose="data key rotation" if new_key else "re-encryption with the newest data key",
            fields=[f"newest={newest}"]
            + [
                f"{name}: resealed={n['resealed']} sealed={n['sealed']}"
                for name, n in counts.items()
            ],
            at=SystemClock().now(),
        )
    )
    store.close()
    out = {"new_key": new_key, "newest": newest, "keys": len(cipher.keys), "fields": counts}
    print(json.dumps(out))
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from bangpae.adapters.crypto import new_key

    print(new_key())
    return 0
