"""Store methods for fix positions kept encrypted at rest (docs/data-at-rest.md).

A mixin of :class:`~bangpae.adapters.store.store.Store`. A fix's latitude, longitude,
speed and heading (speed and heading too: from one known point, a track of them is
the route) are one record of four little-endian doubles, NaN for an unknown speed or
heading, kept in the ``position`` BLOB. With data keys the record is sealed with
AES-256-GCM (:meth:`~bangpae.adapters.crypto.FieldCipher.seal_records`) under the
device's subkey, and the row's id, device and fix time are its associated data: a
record copied to another row, or a row whose device or time was changed, does not
open. The ids are therefore taken before the rows are written.

Without a cipher (tools and tests that do not care) records are written in plaintext,
marked by a first byte 0; a sealed one read then raises DataKeyError, never garbage. A
store with a cipher seals plaintext records when it is migrated, in batches; a rotation
re-seals every record not sealed under the newest key yet, in batches, so one that
stops half way is taken up where it stopped by the next.

Accuracy, battery, validity, alarms and the times stay plain: no place can be told
from them, and retention, legal holds and the rebuild of the engine select by them.
No query selects or orders by a position.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, select, text

from bangpae.adapters.crypto import DataKeyError, FieldCipher
from bangpae.adapters.store import schema as s
from bangpae.adapters.store.case import CaseStore
from bangpae.domain.batch import FixBatch

PLAIN = b"\x00"  # first byte of a record written without data keys
POSITION = struct.Struct("<dddd")  # lat, lon, speed_mps, heading_deg (NaN: unknown)
ROW = struct.Struct("<qqd")  # row id, device id, fix time: what a sealed record is bound to
POSITION_FIELDS = ("lat", "lon", "speed_mps", "heading_deg")
# Rows sealed or re-sealed per transaction: the writer holds SQLite's lock for ~66 ms a
# batch (100,000 rows re-sealed in 3.3 s on the shared 2-core machine).
SEAL_BATCH = 2000

log = logging.getLogger("bangpae.store")


def _unknown(x: float) -> float | None:
    return None if math.isnan(x) else x


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def packed_positions(batch: FixBatch) -> list[bytes]:
    """Each fix's position record (plaintext), in batch order."""
    n = len(batch)
    values = np.empty((n, 4), dtype="<f8")
    values[:, 0], values[:, 1] = batch.lat, batch.lon
    values[:, 2], values[:, 3] = batch.speed, batch.heading
    raw = values.tobytes()
    size = POSITION.size
    return [raw[k * size : (k + 1) * size] for k in range(n)]


def row_data(ids: Sequence[int], devices: Sequence[int], times: Sequence[float]) -> list[bytes]:
    """Each row's associated data: its id, device and fix time, packed."""
    rows = np.empty(len(ids), dtype=[("id", "<i8"), ("device", "<i8"), ("t", "<f8")])
    rows["id"], rows["device"], rows["t"] = ids, devices, times
    raw, size = rows.tobytes(), ROW.size
    return [raw[k * size : (k + 1) * size] for k in range(len(ids))]


def position_of(
    lat: float, lon: float, speed_mps: float | None, heading_deg: float | None
) -> bytes:
    """One position record (plaintext)."""
    return POSITION.pack(lat, lon, _nan(speed_mps), _nan(heading_deg))


def take_ids(c: Connection, dialect: str, n: int) -> list[int]:
    """Ids for ``n`` new fixes, in ascending order, taken before the rows are written.

    SQLite: the single writer (BEGIN IMMEDIATE) takes max(id) + 1 onwards, as SQLite itself
    would. PostgreSQL: from the column's sequence, as the default would.
    """
    if dialect == "sqlite":
        top = c.execute(select(s.fixes.c.id).order_by(s.fixes.c.id.desc()).limit(1)).scalar()
        first = 1 if top is None else int(top) + 1
        return list(range(first, first + n))
    got = c.execute(
        text("SELECT nextval(pg_get_serial_sequence('fixes', 'id')) FROM generate_series(1, :n)"),
        {"n": n},
    ).scalars()
    return sorted(int(x) for x in got)


class SealedPositions(CaseStore):
    """Seal fix positions on write, open them on read, re-seal them under the newest key."""

    cipher: FieldCipher | None = None

    def _cipher_for(self, what: str) -> FieldCipher:
        """The cipher that opens ``what``; without data keys, a DataKeyError that names it
        and says how to give them back (one message for every sealed value)."""
        if self.cipher is None:
            raise DataKeyError(
                f"{what} is encrypted, but no data keys were given: restore the data-keys "
                "file it was encrypted with to the data directory, or set BANGPAE_DATA_KEYS"
            )
        return self.cipher

    def _decrypted(self, what: str, value: str) -> str:
        """A Fernet-sealed value of ``what`` opened; a key error names ``what``."""
        cipher = self._cipher_for(what)
        try:
            return cipher.decrypt(value)
        except DataKeyError as exc:
            raise DataKeyError(f"{what}: {exc}") from None

    def _position_records(
        self, ids: Sequence[int], devices: Sequence[int], times: Sequence[float], plain: list[bytes]
    ) -> list[bytes]:
        """The ``position`` values of new rows: sealed when there is a cipher."""
        if self.cipher is None:
            return [PLAIN + p for p in plain]
        return self.cipher.seal_records(devices, row_data(ids, devices, times), plain)

    def _opened_position(
        self, row_id: int, device_id: int, fix_time: float, record: bytes
    ) -> tuple[float, float, float | None, float | None]:
        """(lat, lon, speed, heading) of a stored record; DataKeyError if it cannot be opened."""
        record = bytes(record)
        if record[:1] == PLAIN:
            plain = record[1:]
        else:
            what = f"fixes {row_id} position"
            cipher = self._cipher_for(what)
            try:
                plain = cipher.open_record(device_id, ROW.pack(row_id, device_id, fix_time), record)
            except DataKeyError as exc:
                raise DataKeyError(f"{what}: {exc}") from None
        lat, lon, speed, heading = POSITION.unpack(plain)
        return lat, lon, _unknown(speed), _unknown(heading)

    def _stored_records(self, c: Connection, after: int, plain_only: bool) -> list[Any]:
        f = s.fixes
        q = select(f.c.id, f.c.device_id, f.c.fix_time, f.c.position).where(f.c.id > after)
        if plain_only:
            q = q.where(text(s.PLAIN_POSITION[self.dialect]))
        return list(c.execute(q.order_by(f.c.id).limit(SEAL_BATCH)).all())

    def _rewrite_positions(self, c: Connection, rows: Sequence[Any]) -> None:
        """Seal the (opened) records of these rows again under the newest key, in place."""
        assert self.cipher is not None
        plain = []
        for r in rows:
            plain.append(position_of(*self._opened_position(r.id, r.device_id, r.fix_time, r[3])))
        ids = [int(r.id) for r in rows]
        devices = [int(r.device_id) for r in rows]
        sealed = self.cipher.seal_records(
            devices, row_data(ids, devices, [r.fix_time for r in rows]), plain
        )
        c.execute(
            s.fixes.update()
            .where(s.fixes.c.id == bindparam("row_id"))
            .values(position=bindparam("record")),
            [{"row_id": i, "record": x} for i, x in zip(ids, sealed, strict=True)],
        )

    def seal_positions(self) -> int:
        """Seal every plaintext position record (left by a store without keys, or by the
        migration to schema 0008), in batches; how many. A no-op without a cipher."""
        if self.cipher is None:
            return 0
        done, after = 0, 0
        while True:
            with self._write() as c:
                rows = self._stored_records(c, after, plain_only=True)
                if not rows:
                    break
                self._rewrite_positions(c, rows)
            done, after = done + len(rows), int(rows[-1].id)
        if done:
            log.info("sealed %d plaintext fix positions", done)
            self._scrub()
        return done

    def reseal_positions(self) -> dict[str, int]:
        """Seal every position record under the newest key, in batches: ``resealed`` (from
        an older key), ``sealed`` (plaintext), ``current`` (already under it, left as is)."""
        cipher = self.cipher
        if cipher is None:
            raise DataKeyError("the store was opened without data keys: nothing to seal with")
        tally = {"resealed": 0, "sealed": 0, "current": 0}
        after = 0
        while True:
            with self._write() as c:
                rows = self._stored_records(c, after, plain_only=False)
                if not rows:
                    break
                stale = []
                for r in rows:
                    record = bytes(r[3])
                    if record[:1] == PLAIN:
                        tally["sealed"] += 1
                    elif cipher.record_is_current(record):
                        tally["current"] += 1
                        continue
                    else:
                        tally["resealed"] += 1
                    stale.append(r)
                if stale:
                    self._rewrite_positions(c, stale)
            after = int(rows[-1].id)
        if tally["sealed"]:
            self._scrub()
        return tally

    def check_positions(self) -> None:
        """Raise DataKeyError unless the keys open the newest sealed position record."""
        f = s.fixes
        with self._read() as c:
            r = c.execute(
                select(f.c.id, f.c.device_id, f.c.fix_time, f.c.position)
                .where(text(f"NOT ({s.PLAIN_POSITION[self.dialect]})"))
                .order_by(f.c.id.desc())
                .limit(1)
            ).first()
        if r is not None:
            self._opened_position(int(r.id), int(r.device_id), r.fix_time, r.position)

    def _scrub(self) -> None:
        """Leave no plaintext of a sealed record in the SQLite file: its old cells sit in
        free space, and its old pages in the write-ahead log, until overwritten.

        VACUUM rewrites the file from its live rows only; the checkpoint then empties the
        log. Run once after plaintext was sealed (the migration), not at every write.
        """
        if self.dialect != "sqlite":
            return  # PostgreSQL: VACUUM FULL is the operator's (docs/data-at-rest.md)
        with self._serial, self._writers, self.engine.connect() as c:
            raw = c.connection.dbapi_connection
            if raw is None:  # pragma: no cover - a checked-out connection always has one
                return
            raw.execute("VACUUM")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- a case carries positions opened -------------------------------------------------

    def _opened_fixes(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Stored fix rows as a case carries them: ``position`` opened into its fields."""
        for row in rows:
            record = row.pop("position")
            opened = self._opened_position(row["id"], row["device_id"], row["fix_time"], record)
            row.update(zip(POSITION_FIELDS, opened, strict=True))
            yield row

    def _sealed_fixes(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """A case's fix rows as stored: their position fields sealed (ids are the case's)."""
        for row in rows:
            values = [row.pop(k, None) for k in POSITION_FIELDS]
            plain = [position_of(*values)]
            row["position"] = self._position_records(
                [row["id"]], [row["device_id"]], [row["fix_time"]], plain
            )[0]
            yield row
