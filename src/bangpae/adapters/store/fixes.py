"""Store methods for fixes: appending them (in bulk, on the single writer), reading them
back with their positions opened, and their purge and legal holds.

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction and has committed when it returns. A fix's position is sealed at rest and
bound to its row's id (see ``positions``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Row, and_, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase, sqlite_insert
from bangpae.adapters.store.positions import packed_positions, take_ids
from bangpae.domain.batch import ALARM_TEXT, FixBatch
from bangpae.domain.errors import Invalid, NotFound
from bangpae.domain.model import Fix, StoredFix

# a fix row's columns, in the order of _SQLITE_FIX_INSERT's parameters
_FIX_ROW = (
    "id",
    "device_id",
    "fix_time",
    "received_at",
    "position",
    "accuracy_m",
    "battery_pct",
    "valid",
    "alarms",
    "late",
    "hold",
)


def _batch_of(fixes: Sequence[Fix]) -> FixBatch:
    try:
        return FixBatch.of(fixes)
    except ValueError as exc:  # an alarm the store does not know
        raise Invalid(str(exc)) from exc


def _or_none(column: npt.NDArray[np.float64]) -> list[float | None]:
    """A column's values with None for NaN (an unknown value is NULL)."""
    missing = np.isnan(column)
    if not missing.any():
        return column.tolist()  # type: ignore[no-any-return]
    values = column.astype(object)
    values[missing] = None
    return values.tolist()  # type: ignore[no-any-return]


def _fix_rows(
    batch: FixBatch, late: npt.NDArray[np.bool_], ids: list[int], positions: list[bytes]
) -> list[tuple[Any, ...]]:
    """The batch's rows as the driver binds them, columns in the order of _FIX_ROW."""
    alarms = batch.alarms
    text = [ALARM_TEXT[m] for m in alarms.tolist()] if alarms.any() else [""] * len(batch)
    return list(
        zip(
            ids,
            batch.device.tolist(),
            batch.t.tolist(),
            batch.received_or_fix_time().tolist(),
            positions,
            _or_none(batch.acc),
            _or_none(batch.battery),
            batch.valid.tolist(),
            text,
            late.tolist(),
            [False] * len(batch),  # not under a legal hold
            strict=True,
        )
    )


class FixStore(StoreBase):
    """The fix log."""

    if TYPE_CHECKING:  # sealing, from ``positions`` on the concrete store

        def _position_records(
            self,
            ids: Sequence[int],
            devices: Sequence[int],
            times: Sequence[float],
            plain: list[bytes],
        ) -> list[bytes]: ...

        def _opened_position(
            self, row_id: int, device_id: int, fix_time: float, record: bytes
        ) -> tuple[float, float, float | None, float | None]: ...

    def _insert_fixes(
        self,
        c: Connection,
        fixes: Sequence[Fix] | FixBatch,
        late: Sequence[bool] | npt.NDArray[np.bool_] | None,
    ) -> list[int]:
        batch = fixes if isinstance(fixes, FixBatch) else _batch_of(fixes)
        n = len(batch)
        if not n:
            return []
        flags = np.zeros(n, dtype=np.bool_) if late is None else np.asarray(late, dtype=np.bool_)
        if len(flags) != n:
            raise Invalid(f"{n} fixes but {len(flags)} late flags")
        # A sealed position is bound to its row's id: the ids are taken first.
        ids = take_ids(c, self.dialect, n)
        devices, times = batch.device.tolist(), batch.t.tolist()
        positions = self._position_records(ids, devices, times, packed_positions(batch))
        rows = _fix_rows(batch, flags, ids, positions)
        if self.dialect == "sqlite":
            try:
                sqlite_insert(c, "fixes", _FIX_ROW, rows, ids=False)
            except sqlite3.IntegrityError as exc:  # the only constraint a fix can break
                raise NotFound("a fix refers to a device that does not exist") from exc
            return ids
        try:
            c.execute(s.fixes.insert(), [dict(zip(_FIX_ROW, r, strict=True)) for r in rows])
        except IntegrityError as exc:  # the only constraint a fix can break: its device
            raise NotFound("a fix refers to a device that does not exist") from exc
        return ids

    def append_fixes(
        self, fixes: Sequence[Fix] | FixBatch, late: Sequence[bool] | None = None
    ) -> list[int]:
        """Append fixes in one transaction; committed (durable) when this returns."""
        if not len(fixes):
            return []
        with self._write() as c:
            return self._insert_fixes(c, fixes, late)

    def _stored(self, r: Row[Any]) -> StoredFix:
        """A fix row with its position opened (DataKeyError if it cannot be)."""
        row_id, device_id = int(r.id), int(r.device_id)
        lat, lon, speed, heading = self._opened_position(row_id, device_id, r.fix_time, r.position)
        return StoredFix(
            row_id,
            Fix(
                device_id=device_id,
                fix_time=r.fix_time,
                lat=lat,
                lon=lon,
                accuracy_m=r.accuracy_m,
                speed_mps=speed,
                heading_deg=heading,
                battery_pct=r.battery_pct,
                valid=bool(r.valid),
                alarms=frozenset(a for a in r.alarms.split(",") if a),
                received_at=r.received_at,
            ),
            bool(r.late),
        )

    def fixes_for_device(
        self,
        device_id: int,
        limit: int = 100,
        before_id: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredFix]:
        """A device's fixes, newest first; ``before_id`` (the last id seen) continues a page;
        ``since`` / ``until`` bound the fix times (both included)."""
        f = s.fixes
        q = select(f).where(f.c.device_id == device_id)
        if before_id is not None:
            q = q.where(f.c.id < before_id)
        if since is not None:
            q = q.where(f.c.fix_time >= since)
        if until is not None:
            q = q.where(f.c.fix_time <= until)
        with self._read() as c:
            rows = c.execute(q.order_by(f.c.id.desc()).limit(max(0, limit))).all()
        return [self._stored(r) for r in rows]

    def latest_fixes(self) -> dict[int, Fix]:
        """The newest live (not late) fix of every device, for rebuilding the engine."""
        f = s.fixes
        # One index seek per device on (device_id, fix_time): no scan of the whole log.
        newest = (
            select(f)
            .where(and_(f.c.device_id == bindparam("device"), f.c.late.is_(False)))
            .order_by(f.c.fix_time.desc(), f.c.id.desc())
            .limit(1)
        )
        out: dict[int, Fix] = {}
        with self._read() as c:
            for device in c.execute(select(s.devices.c.id)).scalars().all():
                r = c.execute(newest, {"device": device}).first()
                if r is not None:
                    out[int(device)] = self._stored(r).fix
        return out

    def fix_at_or_before(self, device_ids: Sequence[int], t: float, window_s: float) -> Fix | None:
        """The newest valid fix of these devices at or before ``t``, no older than the window."""
        if not device_ids:
            return None
        f = s.fixes
        with self._read() as c:
            r = c.execute(
                select(f)
                .where(
                    and_(
                        f.c.device_id.in_(list(device_ids)),
                        f.c.fix_time <= t,
                        f.c.fix_time >= t - window_s,
                        f.c.valid.is_(True),
                    )
                )
                .order_by(f.c.fix_time.desc(), f.c.id.desc())
                .limit(1)
            ).first()
        return None if r is None else self._stored(r).fix

    def count_fixes(self) -> int:
        """How many fixes are stored."""
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(s.fixes)).scalar_one())

    def purge_fixes(self, before: float) -> int:
        """Delete fixes whose fix time is before ``before``, except those under a legal hold."""
        f = s.fixes
        with self._write() as c:
            r = c.execute(f.delete().where(and_(f.c.fix_time < before, f.c.hold.is_(False))))
            return int(r.rowcount)

    def hold_fixes(self, device_ids: Sequence[int], t0: float, t1: float) -> int:
        """Put a legal hold on these devices' fixes with t0 <= fix time <= t1; return how many."""
        if not device_ids:
            return 0
        f = s.fixes
        with self._write() as c:
            r = c.execute(
                f.update()
                .where(
                    and_(
                        f.c.device_id.in_(list(device_ids)),
                        f.c.fix_time >= t0,
                        f.c.fix_time <= t1,
                    )
                )
                .values(hold=True)
            )
            return int(r.rowcount)
