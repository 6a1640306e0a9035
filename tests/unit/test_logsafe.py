"""The redaction behind the sources: what it blanks, what it leaves readable."""

from __future__ import annotations

import logging

import pytest

from bangpae.adapters import logsafe
from bangpae.adapters.logsafe import BLANK, redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # a device's report as httpx prints it: position and key are in the query
        (
            "HTTP Request: GET http://127.0.0.1:5055/?id=A&lat=37.4979&key=x9 200",
            f"HTTP Request: GET http://127.0.0.1:5055/?{BLANK} 200",
        ),
        # a push subscription's path, a live link's token
        (
            '"POST /fcm/send/dGhpcyBpc0FfdG9rZW4xMjM HTTP/1.1" 201',
            f'"POST /fcm/send/{BLANK} HTTP/1.1" 201',
        ),
        (
            '"WebSocket /api/v1/victim/stream?token=abc"',
            f'"WebSocket /api/v1/victim/stream?{BLANK}"',
        ),
        ("Authorization: Bearer abc.def.ghi", f"Authorization: Bearer {BLANK}"),
        ("postgresql://bangpae:s3cret@db.example/bangpae", "postgresql://db.example/bangpae"),
        ("lat: 127.0279 is out of range", f"lat: {BLANK} is out of range"),
        ("sms to +82 10-2345-6789", "sms to ********6789"),
        ("call 010-2345-6789", "call *******6789"),
    ],
)
def test_links_tokens_coordinates_and_phone_numbers_are_blanked(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "Uvicorn running on http://127.0.0.1:8080 (Press CTRL+C to quit)",
        "tracker 12: a second connection from 10.123.45.6:40211",
        "gt06: unknown device '868120123456789' refused",  # an IMEI: operators register it
        "audit record 24 (hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c) gone",
        "refresh token of session 12 presented twice: refresh_token_reused",
        "intake worker 2 exited (code 1) after 12.5 s; fixes at 1800000000.125",
        "(Background on this error at: https://sqlalche.me/e/20/e3q8)",
    ],
)
def test_what_an_operator_needs_stays_readable(line: str) -> None:
    assert redact(line) == line


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    logsafe.install()
    logsafe.install()  # once per process, however often asked
    caplog.set_level(logging.DEBUG)
    return caplog


def test_a_library_record_keeps_its_arguments_apart_for_its_formatter(
    capture: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn's access formatter unpacks exactly these five arguments
    path = "/api/v1/police/live/Zq3kV9xYb2LmN8pQr5sT7uVw"
    access = logging.getLogger("uvicorn.access")
    # a server started earlier in this process configured it (level, propagation)
    monkeypatch.setattr(access, "propagate", True)
    monkeypatch.setattr(access, "disabled", False)
    level = access.level
    access.setLevel(logging.DEBUG)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", path, "1.1", 200)
    finally:
        access.setLevel(level)
    # one record, though a handler left on the logger may have caught it twice
    [r] = {id(x): x for x in capture.records if x.name == "uvicorn.access"}.values()
    assert r.args == ("127.0.0.1:5", "GET", f"/api/v1/police/live/{BLANK}", "1.1", 200)
    assert r.redacted


def test_a_number_argument_that_is_a_coordinate_is_blanked_in_the_message(
    capture: pytest.LogCaptureFixture,
) -> None:
    logging.getLogger("bangpae.example").info("at %.5f, %.5f", 37.49791, 127.02761)
    [r] = capture.records
    assert r.getMessage() == f"at {BLANK}, {BLANK}" and r.redacted


def test_an_exception_text_is_redacted_before_any_handler_writes_it(
    capture: pytest.LogCaptureFixture,
) -> None:
    try:
        raise ValueError("bad key Zq3kV9xYb2LmN8pQr5sT7uVw at 37.49791")
    except ValueError:
        logging.getLogger("bangpae.example").exception("refused")
    [r] = capture.records
    assert "Zq3kV9" not in capture.text and "37.4979" not in capture.text
    assert r.exc_text is not None and f"bad key {BLANK} at {BLANK}" in r.exc_text


def test_a_clean_record_is_left_as_it_was_made(capture: pytest.LogCaptureFixture) -> None:
    logging.getLogger("bangpae.example").warning("hand-off %d via %s", 3, "sms")
    [r] = capture.records
    assert r.args == (3, "sms") and not getattr(r, "redacted", False)
