"""Store methods for the fields kept encrypted at rest: people's phone numbers, and the
zones and curfews of orders (in effect the victim's home, work and school addresses);
fix positions are sealed otherwise (:mod:`~bangpae.adapters.store.positions`) and
joined here for checks, rotations and cases.

A mixin of :class:`~bangpae.adapters.store.store.Store`. The store seals these fields on
write and opens them on read, so everything above it sees plaintext. No query selects
or orders by them: they are only ever read by the row's id.

Without a cipher (tools and tests that do not care) values are written in plaintext, and
a sealed value read raises :class:`~bangpae.adapters.crypto.DataKeyError`: never garbage,
never the sealed text. The service and the command line always pass one.

A case export carries these fields opened (a court reads it without this instance's
keys, and its checksums cover what was shown); an import seals them with this instance's
keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import JSON, Column, Text, bindparam, cast, or_, select

from bangpae.adapters.crypto import PREFIX, DataKeyError, is_sealed
from bangpae.adapters.store import schema as s
from bangpae.adapters.store.positions import SealedPositions
from bangpae.domain.errors import Invalid

# table -> its sealed columns
SEALED: Mapping[str, tuple[str, ...]] = {"people": ("phone",), "orders": ("zones", "curfews")}
# An alarm event keeps the position of the fix that raised it (domain/health.py): stored,
# its ``lat`` and ``lon`` become one sealed value under this key of the event's data, in
# ``events.data`` and in the copy of the event in its incident's timeline entry.
PLACE = "place_sealed"
_PLACE_KEYS = ("lat", "lon")
# A police hand-off's case summary names the parties' last known positions: that key of
# ``handoffs.summary`` is sealed (its JSON as one value), the rest is read as it is.
HANDOFF_POSITIONS = "last_known_positions"


class SealedFields(SealedPositions):
    """Seal and open the sealed fields; re-seal them all under the newest key."""

    def _seal(self, column: Column[Any], value: Any) -> Any:
        """A plaintext value as stored: sealed when there is a cipher (JSON as its text)."""
        if value is None:
            return None
        if self.cipher is None:
            if is_sealed(value):
                raise Invalid(f"{column.name} may not begin with the sealed-value prefix")
            return value
        if isinstance(column.type, JSON):
            value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return self.cipher.encrypt(value)

    def _open(self, column: Column[Any], value: Any, row_id: Any) -> Any:
        """A stored value as plaintext (plaintext written before encryption passes as is)."""
        if not is_sealed(value):
            return value
        plain = self._decrypted(f"{column.table.name} {row_id} {column.name}", value)
        return json.loads(plain) if isinstance(column.type, JSON) else plain

    def _seal_place(self, data: dict[str, Any]) -> dict[str, Any]:
        """An event's data as stored: its position sealed into one value (with a cipher)."""
        if self.cipher is None or not isinstance(data, dict):
            return data
        if not any(k in data for k in _PLACE_KEYS):
            return data
        place = {k: data[k] for k in _PLACE_KEYS if k in data}
        out = {k: v for k, v in data.items() if k not in _PLACE_KEYS}
        out[PLACE] = self.cipher.encrypt(json.dumps(place, separators=(",", ":")))
        return out

    def _open_place(self, data: Any, what: str) -> Any:
        """An event's stored data with its position opened (data without one as it is)."""
        if not isinstance(data, dict) or not is_sealed(data.get(PLACE)):
            return data
        place = json.loads(self._decrypted(f"{what} position", data[PLACE]))
        return {**{k: v for k, v in data.items() if k != PLACE}, **place}

    def _seal_in(self, data: Any, key: str) -> Any:
        """A JSON value with its ``key`` sealed (with a cipher; sealed already: as it is)."""
        if self.cipher is None or not isinstance(data, dict) or key not in data:
            return data
        if is_sealed(data[key]):
            return data
        value = json.dumps(data[key], separators=(",", ":"), ensure_ascii=False)
        return {**data, key: self.cipher.encrypt(value)}

    def _open_in(self, data: Any, key: str, what: str) -> Any:
        """A stored JSON value with its ``key`` opened."""
        if not isinstance(data, dict) or not is_sealed(data.get(key)):
            return data
        return {**data, key: json.loads(self._decrypted(f"{what} {key}", data[key]))}

    def _opened_entry(self, data: Any, entry_id: Any) -> Any:
        """A timeline entry's stored data: the copy of its event, position opened."""
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            return {**data, "data": self._open_place(data["data"], f"incident_entries {entry_id}")}
        return data

    def _sealed_entry(self, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            return {**data, "data": self._seal_place(data["data"])}
        return data

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; concurrent runs wait);
        with a cipher, then seal the plaintext positions left (once the keys are known to
        open what is sealed already: DataKeyError otherwise, and nothing sealed)."""
        super().migrate()
        if self.cipher is not None:
            self.check_keys()
            self.seal_positions()

    def check_keys(self) -> None:
        """Raise DataKeyError unless the keys open the newest sealed value of each table.

        Run at start, so missing or wrong keys stop the process there, with a clear
        message, rather than at the first read of an order or a phone number.
        """
        found: list[tuple[Column[Any], Any, Any]] = []
        with self._read() as c:
            for name, columns in SEALED.items():
                t = s.metadata.tables[name]
                for col in (t.c[x] for x in columns):
                    # a sealed JSON value is a JSON string: not found by LIKE alike everywhere
                    where = None if isinstance(col.type, JSON) else col.like(PREFIX + "%")
                    q = select(t.c.id, col).order_by(t.c.id.desc()).limit(1)
                    r = c.execute(q if where is None else q.where(where)).first()
                    if r is not None:
                        found.append((col, r[1], r[0]))
        for col, value, row_id in found:
            self._open(col, value, row_id)
        self.check_positions()

    def reseal_fields(self) -> dict[str, dict[str, int]]:
        """Seal every sealed field under the newest data key, one transaction per table,
        then the fix positions in batches (:meth:`reseal_positions`).

        Sealed values are re-encrypted (``resealed``); plaintext left from before
        encryption is encrypted (``sealed``). Returns the counts per ``table.column``.
        """
        cipher = self.cipher
        if cipher is None:
            raise DataKeyError("the store was opened without data keys: nothing to seal with")
        counts: dict[str, dict[str, int]] = {}
        for name, columns in SEALED.items():
            t = s.metadata.tables[name]
            cols = [t.c[x] for x in columns]
            tally = {col.name: {"resealed": 0, "sealed": 0} for col in cols}
            with self._write() as c:
                rows = c.execute(select(t.c.id, *cols).order_by(t.c.id).with_for_update()).all()
                params = []
                for r in rows:
                    values: dict[str, Any] = {"row_id": r[0]}
                    for k, col in enumerate(cols, start=1):
                        value = r[k]
                        if value is None:
                            values[f"v_{col.name}"] = None
                        elif is_sealed(value):
                            values[f"v_{col.name}"] = cipher.reseal(value)
                            tally[col.name]["resealed"] += 1
                        else:
                            values[f"v_{col.name}"] = self._seal(col, value)
                            tally[col.name]["sealed"] += 1
                    params.append(values)
                if params:
                    c.execute(
                        t.update()
                        .where(t.c.id == bindparam("row_id"))
                        .values({col: bindparam(f"v_{col.name}", type_=col.type) for col in cols}),
                        params,
                    )
            counts.update({f"{name}.{k}": v for k, v in tally.items()})
        counts.update(self._reseal_places())
        counts["fixes.position"] = self.reseal_positions()
        return counts

    def _reseal_places(self) -> dict[str, dict[str, int]]:
        """Seal every event's position (and its timeline copy's) under the newest key."""
        counts: dict[str, dict[str, int]] = {}
        for t, entry in ((s.events, False), (s.incident_entries, True)):
            tally = {"resealed": 0, "sealed": 0}
            text_of = cast(t.c.data, Text)
            with self._write() as c:
                rows = c.execute(
                    select(t.c.id, t.c.data)
                    .where(or_(text_of.like(f'%"{PLACE}"%'), text_of.like('%"lat"%')))
                    .order_by(t.c.id)
                    .with_for_update()
                ).all()
                params = []
                for r in rows:
                    inner = r.data.get("data") if entry else r.data
                    if not isinstance(inner, dict) or not (
                        PLACE in inner or any(k in inner for k in _PLACE_KEYS)
                    ):
                        continue
                    tally["resealed" if PLACE in inner else "sealed"] += 1
                    opened = self._open_place(inner, f"{t.name} {r.id}")
                    sealed = self._seal_place(opened)
                    params.append(
                        {"row_id": r.id, "v": {**r.data, "data": sealed} if entry else sealed}
                    )
                if params:
                    c.execute(
                        t.update()
                        .where(t.c.id == bindparam("row_id"))
                        .values(data=bindparam("v", type_=t.c.data.type)),
                        params,
                    )
            counts[f"{t.name}.data"] = tally
        h, tally = s.handoffs, {"resealed": 0, "sealed": 0}
        with self._write() as c:
            rows = c.execute(
                select(h.c.id, h.c.summary)
                .where(cast(h.c.summary, Text).like(f'%"{HANDOFF_POSITIONS}"%'))
                .order_by(h.c.id)
                .with_for_update()
            ).all()
            params = []
            for r in rows:
                if not isinstance(r.summary, dict) or HANDOFF_POSITIONS not in r.summary:
                    continue
                tally["resealed" if is_sealed(r.summary[HANDOFF_POSITIONS]) else "sealed"] += 1
                opened = self._open_in(r.summary, HANDOFF_POSITIONS, f"handoffs {r.id}")
                params.append({"row_id": r.id, "v": self._seal_in(opened, HANDOFF_POSITIONS)})
            if params:
                c.execute(
                    h.update()
                    .where(h.c.id == bindparam("row_id"))
                    .values(summary=bindparam("v", type_=h.c.summary.type)),
                    params,
                )
        counts["handoffs.summary"] = tally
        return counts

    # -- a case carries these fields opened ----------------------------------------------

    def _opened_rows(self, name: str, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        t = s.metadata.tables[name]
        for row in rows:
            yield {
                k: self._open(t.c[k], v, row.get("id")) if k in SEALED[name] else v
                for k, v in row.items()
            }

    def _sealed_rows(self, name: str, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        t = s.metadata.tables[name]
        for row in rows:
            yield {k: self._seal(t.c[k], v) if k in SEALED[name] else v for k, v in row.items()}

    def case_tables(self, order_id: int) -> Iterator[tuple[str, Iterator[dict[str, Any]]]]:
        """Each case table's rows for this order (sealed fields opened), then ``audit``."""
        for name, rows in super().case_tables(order_id):
            if name == "fixes":
                yield name, self._opened_fixes(rows)
            elif name == "events":
                yield (
                    name,
                    ({**r, "data": self._open_place(r["data"], f"events {r['id']}")} for r in rows),
                )
            elif name == "handoffs":
                yield (
                    name,
                    (
                        {**r, "summary": self._open_in(r["summary"], HANDOFF_POSITIONS, "handoffs")}
                        for r in rows
                    ),
                )
            elif name == "incident_entries":
                yield name, ({**r, "data": self._opened_entry(r["data"], r["id"])} for r in rows)
            else:
                yield name, (self._opened_rows(name, rows) if name in SEALED else rows)

    def import_case(
        self,
        tables: Callable[[str], Iterable[dict[str, Any]]],
        audit: Callable[[Mapping[str, int]], tuple[str, str, str, str, list[str], float]],
    ) -> dict[str, int]:
        """Insert a case's rows as :meth:`CaseStore.import_case`, sealing the sealed fields."""

        def sealed(name: str) -> Iterable[dict[str, Any]]:
            rows = tables(name)
            if name == "fixes":
                return self._sealed_fixes(rows)
            if name == "events":
                return ({**r, "data": self._seal_place(r["data"])} for r in rows)
            if name == "handoffs":
                return (
                    {**r, "summary": self._seal_in(r["summary"], HANDOFF_POSITIONS)} for r in rows
                )
            if name == "incident_entries":
                return ({**r, "data": self._sealed_entry(r["data"])} for r in rows)
            return self._sealed_rows(name, rows) if name in SEALED else rows

        return super().import_case(sealed, audit)
