"""OwnTracks decoding on every real vector, and hostile input."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.protocols import owntracks
from bangpae.protocols.errors import FrameError
from tests.conftest import FUZZ_EXAMPLES

VECTORS = (
    Path(__file__).resolve().parents[3] / "shared" / "protocol-vectors" / "traccar-vectors.json"
)


def test_every_owntracks_vector_decodes_to_its_expected_fields() -> None:
    if not VECTORS.exists():
        pytest.skip(f"protocol vectors not found at {VECTORS}")
    vectors = json.loads(VECTORS.read_text())["protocols"]["owntracks"]["vectors"]
    assert len(vectors) == 6
    for v in vectors:
        want = v["derived"]
        (fix,) = owntracks.decode(v["http"]["body"].encode(), None, 2e9).fixes
        assert fix.identifier == want["device_id"], v["id"]
        assert (fix.lat, fix.lon) == (want["latitude"], want["longitude"])
        assert (
            fix.fix_time
            == datetime.fromisoformat(want["fix_time"].replace("Z", "+00:00")).timestamp()
        )
        if "speed_kmh" in want:
            assert fix.speed_mps == pytest.approx(want["speed_kmh"] / 3.6)


def test_the_apps_headers_name_the_device_when_the_message_has_no_topic() -> None:
    body = b'{"_type":"location","lat":37.5,"lon":127.0,"tst":1800000000,"tid":"JJ"}'
    ident = owntracks.identity_from_headers("kim", "phone")
    (fix,) = owntracks.decode(body, ident, 1_800_000_001.0).fixes
    assert fix.identifier == "owntracks/kim/phone"


def test_arrays_are_decoded_and_other_types_ignored_by_name() -> None:
    body = json.dumps(
        [
            {"_type": "location", "lat": 37.5, "lon": 127.0, "tst": 1_800_000_000, "tid": "A1"},
            {"_type": "transition", "event": "enter"},
            {"_type": "lwt", "tst": 1},
        ]
    ).encode()
    out = owntracks.decode(body, None, 1_800_000_001.0)
    assert len(out.fixes) == 1 and out.ignored == ["transition", "lwt"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"_type":"location","lon":1,"tid":"A"}',
        b'{"_type":"location","lat":"37","lon":1,"tid":"A"}',
        b'{"_type":"location","lat":97,"lon":1,"tid":"A"}',
        b'{"_type":"location","lat":37,"lon":1}',
        b'{"_type":"location","lat":37,"lon":1,"tid":"A","tst":4102444800}',
    ],
)
def test_bad_messages_are_refused_with_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        owntracks.decode(body, None, 1_800_000_000.0)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["_type", "lat", "lon", "tst", "acc", "vel", "cog", "batt", "tid", "topic"]
                ),
                c,
                max_size=6,
            )
        ),
        max_leaves=15,
    ).map(lambda x: json.dumps(x).encode())
)
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
def test_fuzz_the_decoder_never_fails_except_with_a_frame_error(body: bytes) -> None:
    try:
        owntracks.decode(body, None, 1_800_000_000.0)
    except FrameError:
        pass
