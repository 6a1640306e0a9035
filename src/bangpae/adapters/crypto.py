"""Encryption at rest of the most sensitive fields, with key rotation.

A value is sealed with Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under
the newest data key and kept as ``enc1:<token>``. Any of the keys opens it (MultiFernet),
so a new key can be put first while values sealed under older ones are still read, and
a tampered value or a wrong key is refused, never read as garbage. The prefix tells a
sealed value from plaintext written before encryption existed.

The keys come from ``BANGPAE_DATA_KEYS`` (comma-separated, newest first) or else from the
file ``data-keys`` in the data directory (one key per line, newest first, mode 0600),
which is made on first start when neither exists. Every process that opens the database
needs the same keys. A process reading the key file reloads it when it changes, so a
rotation made by the command line reaches a running service without a restart.

Positions are too many for Fernet (about 6 µs a value, and 100 bytes of base64 each):
a fix's position is sealed as one AES-256-GCM record (about 1 µs) under a subkey of the
data keys, derived with HKDF for that purpose and then per device, so that random
96-bit nonces stay far inside their bound (2**32 records per key: one device sending a
fix a second for 136 years). The record names the data key it was sealed with (a key
id of 4 bytes, derived too), and the caller's associated data binds it to its row.
docs/data-at-rest.md has the argument.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

PREFIX = "enc1:"
KEY_FILE = "data-keys"
ENV = "BANGPAE_DATA_KEYS"

# A sealed record: format, key id, nonce, then AES-GCM's ciphertext and 16-byte tag.
RECORD_SEALED = 1
RECORD_HEADER = struct.Struct("<BI")  # format, key id
NONCE_BYTES = 12
TAG_BYTES = 16
# The purpose a record subkey is derived for: another purpose gets unrelated keys.
POSITIONS = b"bangpae/fix-position/v1"

log = logging.getLogger("bangpae.crypto")


class DataKeyError(Exception):
    """Data keys missing or malformed, or a sealed value that none of them opens."""


def is_sealed(value: object) -> bool:
    """Whether a stored value is a sealed one (``enc1:...``) rather than plaintext."""
    return isinstance(value, str) and value.startswith(PREFIX)


def new_key() -> str:
    """A fresh random data key (a Fernet key: 32 bytes, URL-safe base64)."""
    return Fernet.generate_key().decode()


def fingerprint(key: str) -> str:
    """A short name for a key, safe to print and audit: the start of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _fernets(keys: Sequence[str], where: str) -> MultiFernet:
    if not keys:
        raise DataKeyError(f"{where} holds no data key")
    fernets = []
    for n, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except ValueError:  # the key itself is never echoed: it may be nearly right
            raise DataKeyError(
                f"data key {n} of {where} is not a Fernet key (32 bytes, URL-safe base64)"
            ) from None
    return MultiFernet(fernets)


def parse_keys(text: str, separator: str) -> list[str]:
    """The keys in a comma- or newline-separated list; blank entries and # comments skipped."""
    parts = (x.strip() for x in text.split(separator))
    return [x for x in parts if x and not x.startswith("#")]


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_key_file(path: Path) -> list[str]:
    """The keys kept in a key file, newest first."""
    try:
        keys = parse_keys(path.read_text(encoding="ascii"), "\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataKeyError(f"cannot read the data keys in {path}: {exc}") from exc
    if path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users: chmod 600 it", path)
    return keys


def _put_key_file(path: Path, keys: Sequence[str], *, replace: bool) -> None:
    """Write a whole key file (mode 0600) beside ``path``, then move it into place at once.

    ``replace``: over the old file (a crash leaves the old file or the new one); else
    only if there is none yet (FileExistsError), so no reader ever sees it half written.
    """
    _fernets(keys, str(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover keeps its own mode: the file is made anew
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("".join(f"{k}\n" for k in keys))
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new name itself survives a power loss
    finally:
        os.close(dir_fd)


def write_key_file(path: Path, keys: Sequence[str]) -> None:
    """Replace a key file atomically (mode 0600): a crash leaves the old file or the new one."""
    _put_key_file(path, keys, replace=True)


class _RecordKey:
    """One data key's subkey for one purpose, and the AES-GCM keys per scope (a device)."""

    def __init__(self, key: str, purpose: bytes) -> None:
        ikm = base64.urlsafe_b64decode(key.encode())
        self.prk = HKDF(hashes.SHA256(), 32, salt=None, info=purpose).derive(ikm)
        kid = HKDFExpand(hashes.SHA256(), 4, b"key-id").derive(self.prk)
        self.key_id = int.from_bytes(kid, "little")
        self.header = RECORD_HEADER.pack(RECORD_SEALED, self.key_id)
        self._scoped: dict[int, AESGCM] = {}

    def aead(self, scope: int) -> AESGCM:
        """The AES-256-GCM key of one scope (made once, then kept)."""
        a = self._scoped.get(scope)
        if a is None:
            info = b"scope:" + scope.to_bytes(8, "little", signed=True)
            a = AESGCM(HKDFExpand(hashes.SHA256(), 32, info).derive(self.prk))
            self._scoped[scope] = a
        return a


@dataclass(frozen=True, slots=True)
class _Keys:
    keys: tuple[str, ...]
    fernet: MultiFernet
    stamp: tuple[int, int, int] | None
    records: tuple[_RecordKey, ...]  # POSITIONS subkeys, newest first

    @classmethod
    def of(cls, keys: Sequence[str], where: str, stamp: tuple[int, int, int] | None) -> _Keys:
        fernet = _fernets(keys, where)  # checks every key first
        records = tuple(_RecordKey(k, POSITIONS) for k in keys)
        if len({rk.key_id for rk in records}) < len(set(keys)):  # about 2**-32 a pair
            raise DataKeyError(f"two data keys of {where} share a record key id: make a new one")
        return cls(tuple(keys), fernet, stamp, records)


class FieldCipher:
    """Seals and opens field values with the data keys (newest first)."""

    def __init__(
        self,
        keys: Sequence[str],
        path: Path | None = None,
        stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self.path = path
        where = str(path) if path is not None else ENV
        self._keys = _Keys.of(keys, where, stamp)
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path) -> FieldCipher:
        """The keys of a key file; the file is read again whenever it changes."""
        stamp = _stamp(path)  # before reading: a change made meanwhile is read next time
        return cls(read_key_file(path), path, stamp)

    @property
    def keys(self) -> tuple[str, ...]:
        """The data keys, newest first."""
        return self._keys.keys

    def _reload(self) -> bool:
        """Read the key file again if it changed since it was read; whether it had."""
        if self.path is None:
            return False
        with self._lock:
            try:
                stamp = _stamp(self.path)
            except OSError:
                return False  # keep the keys in hand rather than lose them
            if stamp == self._keys.stamp:
                return False
            keys = read_key_file(self.path)
            self._keys = _Keys.of(keys, str(self.path), stamp)
            return True

    def encrypt(self, plaintext: str) -> str:
        """Seal a value under the newest key."""
        self._reload()  # a rotation's new key is used from the next write on
        return PREFIX + self._keys.fernet.encrypt(plaintext.encode()).decode()

    def _open(self, value: str, fernet: MultiFernet) -> str:
        return fernet.decrypt(value[len(PREFIX) :].encode()).decode()

    def decrypt(self, value: str) -> str:
        """Open a sealed value; DataKeyError when no key opens it (wrong keys, or altered)."""
        if not is_sealed(value):
            raise DataKeyError(f"not a sealed value (no {PREFIX} prefix)")
        try:
            return self._open(value, self._keys.fernet)
        except InvalidToken:
            if not self._reload():
                raise self._refused() from None
        try:  # sealed under a key another process has just added
            return self._open(value, self._keys.fernet)
        except InvalidToken:
            raise self._refused() from None

    def reseal(self, value: str) -> str:
        """A sealed value sealed again under the newest key; plaintext sealed for the first time."""
        if not is_sealed(value):
            return self.encrypt(value)
        self._reload()
        try:
            token = self._keys.fernet.rotate(value[len(PREFIX) :].encode())
        except InvalidToken:
            raise self._refused() from None
        return PREFIX + token.decode()

    # -- records: one AES-GCM call per position ---------------------------------------

    def seal_records(
        self, scopes: Sequence[int], associated: Sequence[bytes], plaintexts: Sequence[bytes]
    ) -> list[bytes]:
        """Seal each plaintext under the newest key's subkey for its scope (a device id),
        bound to its associated data (its row): ``format | key id | nonce | ciphertext``.
        """
        self._reload()  # a rotation's new key is used from the next write on
        rk = self._keys.records[0]
        head = rk.header
        nonces = os.urandom(NONCE_BYTES * len(plaintexts))  # one system call per batch
        out = []
        for k, (scope, ad, pt) in enumerate(zip(scopes, associated, plaintexts, strict=True)):
            nonce = nonces[NONCE_BYTES * k : NONCE_BYTES * (k + 1)]
            out.append(head + nonce + rk.aead(scope).encrypt(nonce, pt, head + ad))
        return out

    def _record_key(self, record: bytes) -> _RecordKey | None:
        """The key whose id the record names, if it is given."""
        if len(record) < RECORD_HEADER.size + NONCE_BYTES + TAG_BYTES:
            return None
        form, key_id = RECORD_HEADER.unpack_from(record)
        if form != RECORD_SEALED:
            return None
        return next((rk for rk in self._keys.records if rk.key_id == key_id), None)

    def open_record(self, scope: int, associated: bytes, record: bytes) -> bytes:
        """The plaintext of a sealed record; DataKeyError when no key given sealed it, or
        when it was altered or moved (to another row or device) since."""
        rk = self._record_key(record)
        if rk is None and self._reload():  # sealed under a key another process added
            rk = self._record_key(record)
        if rk is None:
            raise DataKeyError(
                "a sealed record names a data key that is not among the "
                f"{len(self._keys.keys)} given, or is not a sealed record: restore the old "
                "key (newest first)"
            )
        start = RECORD_HEADER.size
        nonce, body = record[start : start + NONCE_BYTES], record[start + NONCE_BYTES :]
        try:
            return rk.aead(scope).decrypt(nonce, body, rk.header + associated)
        except InvalidTag:
            raise DataKeyError(
                "a sealed record does not authenticate: it was altered, or moved from "
                "another row or device"
            ) from None

    def record_is_current(self, record: bytes) -> bool:
        """Whether a record was sealed under the newest key (a rotation leaves it as it is)."""
        self._reload()
        return self._record_key(record) is self._keys.records[0]

    def _refused(self) -> DataKeyError:
        n = len(self._keys.keys)
        return DataKeyError(
            f"a sealed value cannot be opened with the {n} data key(s) given: the keys are "
            "not those it was encrypted with (restore the old key, newest first), or the "
            "value was altered"
        )


def open_data_keys(data_dir: Path, env_keys: str | None, *, create: bool) -> FieldCipher | None:
    """The data keys of an instance: from ``env_keys`` if set, else the key file.

    With ``create``, a missing key file is made with one new key (first start); without
    it, None (the caller then reads plaintext only, and refuses sealed values loudly).
    """
    if env_keys is not None and env_keys.strip():
        return FieldCipher(parse_keys(env_keys, ","))
    path = data_dir / KEY_FILE
    if path.exists():
        return FieldCipher.from_file(path)
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _put_key_file(path, [new_key()], replace=False)
        log.info("made a new data key in %s: back it up, without it the data is lost", path)
    except FileExistsError:  # another process starting at the same moment made it
        pass
    return FieldCipher.from_file(path)


def add_key(cipher: FieldCipher) -> FieldCipher:
    """Put a new key first in the cipher's key file, keeping the old ones; the new cipher."""
    if cipher.path is None:
        raise DataKeyError(
            f"the data keys come from {ENV}: put a new key (bangpae keys generate) first "
            "there for every process, restart them, then run bangpae keys rotate --no-new-key"
        )
    current = read_key_file(cipher.path)
    write_key_file(cipher.path, [new_key(), *current])
    return FieldCipher.from_file(cipher.path)
