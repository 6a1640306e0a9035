"""The audit key: the secret that makes the audit chain and its anchors unforgeable.

Every audit record carries an HMAC-SHA256 of its chain hash under this key, and every
anchor line an HMAC of itself (docs/audit-log.md). The key must be kept where the
database's users cannot read it: someone who can write the database but not read the key
can no longer rebuild a chain, a purge checkpoint or an anchor that verifies.

The key comes from ``BANGPAE_AUDIT_KEY`` (64 hex digits: 32 bytes) or else from the file
``audit-key`` in the data directory (the same, on one line, mode 0600), which is made on
first start when neither exists. Every process that writes or verifies the audit log
needs the same key; losing it leaves the records written under it unverifiable.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

KEY_FILE = "audit-key"
ENV = "BANGPAE_AUDIT_KEY"
KEY_BYTES = 32

log = logging.getLogger("bangpae.auditkey")


class AuditKeyError(Exception):
    """An audit key that is malformed or cannot be read."""


def new_audit_key() -> str:
    """A fresh random audit key, as the 64 hex digits the file and the variable hold."""
    return secrets.token_hex(KEY_BYTES)


def parse_audit_key(text: str, where: str) -> bytes:
    """The key bytes of 64 hex digits (surrounding blanks ignored); the key is never echoed."""
    value = text.strip()
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise AuditKeyError(f"the audit key in {where} is not {2 * KEY_BYTES} hex digits")
    return key


def read_audit_key(path: Path) -> bytes:
    """The key kept in a key file."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"cannot read the audit key in {path}: {exc}") from exc
    if path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users: chmod 600 it", path)
    return parse_audit_key(text, str(path))


def _create_key_file(path: Path) -> None:
    """Write a new key file (mode 0600) beside ``path``, then link it into place, so no
    reader sees it half written; FileExistsError when another process made it first."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover keeps its own mode: the file is made anew
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(new_audit_key() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_audit_key(data_dir: Path, env_key: str | None, *, create: bool) -> bytes | None:
    """The audit key of an instance: ``env_key`` if set, else the data dir's key file.

    With ``create``, a missing key file is made (first start); without it, None (the
    store then refuses to extend or vouch for a keyed chain).
    """
    if env_key is not None and env_key.strip():
        return parse_audit_key(env_key, ENV)
    path = data_dir / KEY_FILE
    if path.exists():
        return read_audit_key(path)
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _create_key_file(path)
        log.info("made a new audit key in %s: back it up apart from the database", path)
    except FileExistsError:  # another process starting at the same moment made it
        pass
    return read_audit_key(path)
