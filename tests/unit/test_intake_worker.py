"""The channel between intake workers and the main process: what crosses it, and what not."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangpae.adapters.listeners.intake_worker import (
    FIX_RECORD,
    HEADER,
    ChannelError,
    MessageReader,
    message,
    pack_fix,
    unpack_fixes,
)
from bangpae.domain.batch import ALARMS, FixBatch
from bangpae.domain.model import Alarm, Fix

optional = st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False))
fixes = st.builds(
    Fix,
    device_id=st.integers(0, 2**62),
    fix_time=st.floats(0, 4e9, allow_nan=False),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    accuracy_m=optional,
    speed_mps=optional,
    heading_deg=optional,
    battery_pct=optional,
    valid=st.booleans(),
    alarms=st.frozensets(st.sampled_from(ALARMS)),
    received_at=st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False)),
)


@given(st.lists(fixes, max_size=20))
def test_fixes_cross_the_channel_unchanged(batch: list[Fix]) -> None:
    assert set(ALARMS) == {a.value for a in Alarm}  # every alarm a device may report
    payload = b"".join(pack_fix(f) for f in batch)
    assert list(FixBatch.concat([unpack_fixes(payload, lambda _d: True)])) == batch


def _record(**change: float) -> bytes:
    f = {"lat": 37.5, "lon": 127.0, "fix_time": 1.8e9, **change}
    return pack_fix(Fix(7, f["fix_time"], f["lat"], f["lon"]))


@pytest.mark.parametrize(
    "payload",
    [
        _record(lat=math.nan),
        _record(lat=90.5),
        _record(lon=-180.1),
        _record(fix_time=math.nan),
        _record(fix_time=-1.0),
        _record(fix_time=math.inf),
        _record()[:-1],  # a record cut short
        FIX_RECORD.pack(7, 1.8e9, 37.5, 127.0, *[math.nan] * 4, 1, 1 << len(ALARMS), math.nan),
        FIX_RECORD.pack(7, 1.8e9, 37.5, 127.0, *[math.nan] * 4, 2, 0, math.nan),  # valid=2
    ],
)
def test_a_record_out_of_range_is_refused_whole(payload: bytes) -> None:
    with pytest.raises(ChannelError):
        unpack_fixes(_record() + payload, lambda _d: True)


def test_a_worker_sends_fixes_only_for_devices_confirmed_to_it() -> None:
    assert FixBatch.concat([unpack_fixes(_record(), {7}.__contains__)]).device.tolist() == [7]
    with pytest.raises(ChannelError, match="not confirmed"):
        unpack_fixes(_record(), {8}.__contains__)


def test_an_alarm_the_channel_does_not_know_is_not_sent_silently() -> None:
    with pytest.raises(ValueError, match="unheard_of"):
        pack_fix(Fix(7, 1.8e9, 37.5, 127.0, alarms=frozenset({"unheard_of"})))


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_messages_are_cut_from_the_stream_however_it_is_split() -> None:
    got: list[tuple[int, bytes]] = []
    reader = MessageReader(lambda k, p: got.append((k, p)), lambda: None)
    stream = message(b"A", b"\x01\x02") + message(b"M", b"[]") + message(b"U", b"")
    for i in range(len(stream)):  # one byte at a time
        reader.data_received(stream[i : i + 1])
    assert got == [(ord("A"), b"\x01\x02"), (ord("M"), b"[]"), (ord("U"), b"")]


def test_a_message_too_large_closes_the_channel() -> None:
    got: list[tuple[int, bytes]] = []
    reader = MessageReader(lambda k, p: got.append((k, p)), lambda: None)
    transport = _Transport()
    reader.connection_made(transport)  # type: ignore[arg-type]
    reader.data_received(HEADER.pack(64 * 1024 * 1024, ord("F")))
    assert transport.closed and got == []
