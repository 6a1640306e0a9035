"""A batch of fixes as columns: the same fixes in, the same fixes out, the same decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangpae.domain.batch import (
    ALARM_SETS,
    ALARM_TEXT,
    ALARMS,
    RECORD,
    FixBatch,
    PackedFixes,
    alarm_mask,
)
from bangpae.domain.model import Alarm, EventKind, Fix
from tests.unit.test_engine import T0, make_engine, off_fix, vic_fix

optional = st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False))
fixes = st.builds(
    Fix,
    device_id=st.integers(-(2**63), 2**63 - 1),
    fix_time=st.floats(allow_nan=False),
    lat=st.floats(allow_nan=False),
    lon=st.floats(allow_nan=False),
    accuracy_m=optional,
    speed_mps=optional,
    heading_deg=optional,
    battery_pct=optional,
    valid=st.booleans(),
    alarms=st.frozensets(st.sampled_from(ALARMS)),
    received_at=st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False)),
)


@given(st.lists(fixes, max_size=30), st.lists(fixes, max_size=5))
def test_fixes_become_columns_and_back_unchanged(first: list[Fix], second: list[Fix]) -> None:
    a, b = FixBatch.of(first), FixBatch.of(second)
    assert len(a) == len(first) and list(a) == first
    assert list(FixBatch.concat([a, b])) == first + second
    assert list(a.take(np.arange(len(first))[::-1])) == first[::-1]


def test_every_alarm_has_its_bit_and_its_stored_text() -> None:
    assert set(ALARMS) == {a.value for a in Alarm}
    mask = alarm_mask({"tamper", "sos"})
    assert ALARM_SETS[mask] == {"tamper", "sos"} and ALARM_TEXT[mask] == "sos,tamper"
    assert ALARM_TEXT[0] == "" and alarm_mask(()) == 0
    with pytest.raises(ValueError, match="unheard_of"):
        FixBatch.of([Fix(1, 1.0, 37.5, 127.0, alarms=frozenset({"unheard_of"}))])


def test_positions_are_valid_fixes_received_on_time_with_nan_as_unknown() -> None:
    batch = FixBatch.positions([1, 2], [10.0, 11.0], [37.5, 37.6], [127.0, 127.1], [5.0, math.nan])
    assert list(batch) == [
        Fix(1, 10.0, 37.5, 127.0, 5.0, received_at=10.0),
        Fix(2, 11.0, 37.6, 127.1, received_at=11.0),
    ]
    assert batch.received_or_fix_time().tolist() == [10.0, 11.0]
    assert list(FixBatch.empty()) == [] and list(FixBatch.concat([])) == []
    with pytest.raises(ValueError, match="rows"):
        FixBatch.positions([1], [10.0, 11.0], [37.5], [127.0], [5.0])


def test_a_batch_of_alarms_and_batteries_decides_as_one_fix_at_a_time() -> None:
    """An alarm then plain fixes of the same device in one batch: the episode runs on."""
    script = [
        vic_fix(0),
        off_fix(1, 3000, alarms=frozenset({"tamper"})),
        off_fix(2, 3000),
        off_fix(3, 3000, battery_pct=15.0),
        off_fix(40, 3000),
        off_fix(400, 3000, alarms=frozenset({"tamper", "power_cut"}), battery_pct=9.0),
        off_fix(401, 3000),
    ]
    now = script[-1].fix_time
    one = make_engine()
    single = [e for f in script for e in one.ingest([f], now)]
    many = make_engine()
    batched, late = many.ingest_batch(FixBatch.of(script), now)
    assert not late.any()
    assert sorted(e.id for e in single) == sorted(e.id for e in batched)
    kinds = {e.kind for e in batched}
    assert {EventKind.TAMPER, EventKind.POWER_CUT, EventKind.LOW_BATTERY} <= kinds


def test_late_fixes_of_a_batch_are_marked_where_they_stand() -> None:
    e = make_engine()
    e.ingest([vic_fix(0), off_fix(10, 3000)], T0 + 10)
    batch = FixBatch.of([off_fix(12, 3000), off_fix(5, 50), vic_fix(13), vic_fix(1)])
    _, late = e.ingest_batch(batch, T0 + 13)
    assert late.tolist() == [False, True, False, True]
    assert e.drain_late() == [batch.fix(1), batch.fix(3)]


def _packed(fixes: list[Fix]) -> PackedFixes:
    r = np.zeros(len(fixes), dtype=RECORD)
    b = FixBatch.of(fixes)
    for name in RECORD.names:
        r[name] = getattr(b, name)
    return PackedFixes(r.tobytes())


@given(st.lists(st.lists(fixes, max_size=4), max_size=6), st.lists(st.booleans(), max_size=6))
def test_packed_and_column_parts_join_in_their_order(
    parts: list[list[Fix]], packed: list[bool]
) -> None:
    mixed = [
        _packed(p) if i < len(packed) and packed[i] else FixBatch.of(p) for i, p in enumerate(parts)
    ]
    assert [len(m) for m in mixed] == [len(p) for p in parts]
    assert list(FixBatch.concat(mixed)) == [f for p in parts for f in p]


def test_packed_fixes_of_a_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError, match="wrong size"):
        PackedFixes(b"\0" * (RECORD.itemsize + 1))
