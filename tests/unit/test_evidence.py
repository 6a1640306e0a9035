"""What a recording is taken for (its first bytes), and who the policy lets hear one."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from bangpae.adapters.policyfile import DEFAULT_POLICY
from bangpae.api.routes.evidence import MAX_UPLOAD, body_limit, sniff
from bangpae.domain.access import PolicyError, parse_policy

WEBM = b"\x1a\x45\xdf\xa3\x87\x42\x82\x84webm" + b"\x00" * 32
OGG_OPUS = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13OpusHead\x01\x01" + b"\x00" * 16
MP4 = b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A mp42isom" + b"\x00" * 16


@pytest.mark.parametrize(
    ("data", "kind"), [(WEBM, "audio/webm"), (OGG_OPUS, "audio/ogg"), (MP4, "audio/mp4")]
)
def test_the_three_containers_a_phone_records_are_told_by_their_bytes(
    data: bytes, kind: str
) -> None:
    assert sniff(data) == kind


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # WAV: not what a phone's recorder makes
        b"ID3\x03\x00\x00\x00",  # MP3
        WEBM.replace(b"webm", b"matr"),  # another EBML document (Matroska video)
        OGG_OPUS.replace(b"OpusHead", b"\x01vorbis\x00"),  # Ogg, but Vorbis
        MP4.replace(b"M4A ", b"qt  "),  # QuickTime
        b"<html><script>alert(1)</script></html>",
        b"webm OggS ftypM4A " * 4,  # the magic words, in the wrong places
    ],
)
def test_anything_else_is_not_a_recording(data: bytes) -> None:
    assert sniff(data) is None


def test_only_an_upload_gets_the_recordings_body_limit() -> None:
    assert body_limit("/api/v1/victim/sos/12/evidence", 1000) == MAX_UPLOAD
    for path in ("/api/v1/victim/sos", "/api/v1/victim/sos/12/evidence/x", "/api/v1/people"):
        assert body_limit(path, 1000) == 1000


def _shipped() -> dict[str, Any]:
    with open(DEFAULT_POLICY, "rb") as f:
        return tomllib.load(f)


def test_the_shipped_policy_lets_each_staff_role_hear_recordings_for_its_own_purposes() -> None:
    policy = parse_policy(_shipped())
    assert policy.may_read_evidence("operator", "incident_response")
    assert not policy.may_read_evidence("operator", "court_order")
    assert policy.may_read_evidence("auditor", "verification_task")
    assert not policy.may_read_evidence("auditor", "incident_response")
    for role in ("victim", "offender", "field_officer", "police", "judge", "clerk", "admin"):
        assert not any(policy.may_read_evidence(role, p) for p in ("incident_response", "x"))


def test_a_policy_without_an_evidence_table_lets_nobody_hear_a_recording() -> None:
    data = _shipped()
    del data["evidence"]
    policy = parse_policy(data)
    assert not policy.may_read_evidence("supervisor", "incident_response")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"offender": ["legal_defence"]}, "may not hear recordings"),
        ({"police": ["police_handoff"]}, "may not hear recordings"),
        ({"operator": ["curiosity"]}, "unknown purpose"),
        ({"operator": "incident_response"}, "expected a list"),
    ],
)
def test_a_policy_cannot_give_recordings_to_anyone_else_or_for_another_purpose(
    table: dict[str, Any], message: str
) -> None:
    data = {**_shipped(), "evidence": table}
    with pytest.raises(PolicyError, match=message):
        parse_policy(data)
