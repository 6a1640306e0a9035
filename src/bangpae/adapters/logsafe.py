"""The second line of defence for the log: token-like text, coordinates, phone numbers
and the queries of links are blanked in every record before any handler sees it.

The first line is at the source: bangpae's own log lines name things by id, count and
length, never by content (docs/robustness.md). This is for the lines we do not write
(httpx and urllib3 print the URLs they call, which for Web Push carry the browser's
subscription; uvicorn prints request paths) and for an exception message that happens
to quote a value. A bangpae record that needed it is marked ``redacted``, so the test
of the log can tell a slip at the source from a library's line.

Names cannot be recognised by their shape: they are kept out at the source alone.
"""

from __future__ import annotations

import logging
import re
from typing import Any

BLANK = "[redacted]"
# credentials in a URL, and the query of a link or request line (a device's key, its
# position); a capability in a link's path is caught as a token below
_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s\"'<>@]+@")
_QUERY = re.compile(r"(?<=[\w/])\?[^\s\"'<>]+")
_BEARER = re.compile(r"\bBearer\s+[^\s\"']+")
# a run of 20+ URL-safe characters mixing upper case, lower case and digits: a token, a
# JWT part, a key (hex digests, all lower case, are left readable)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,}")
# a decimal with 1-3 integer digits and 3+ decimals: at 3 decimals a degree is 110 m
_COORDINATE = re.compile(r"(?<![\w.])-?\d{1,3}\.\d{3,}(?![\w.])")
_PHONE = re.compile(
    r"(?<![\w+])\+\d[\d ().-]{6,}\d(?!\w)"  # international
    r"|(?<!\d)0\d{1,2}[- ]?\d{3,4}[- ]?\d{4}(?!\d)"  # Korean national: 010-1234-5678
)


def _token(m: re.Match[str]) -> str:
    s = m.group(0)
    mixed = any(c.isupper() for c in s) and any(c.islower() for c in s)
    return BLANK if mixed and any(c.isdigit() for c in s) else s


def _phone(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "*" * (len(digits) - 4) + digits[-4:]


def redact(text: str) -> str:
    """``text`` with credentials and queries of links, tokens, coordinates and phone
    numbers blanked (a phone number keeps its last four digits)."""
    text = _CREDENTIALS.sub(r"\1", text)
    text = _QUERY.sub("?" + BLANK, text)
    text = _BEARER.sub("Bearer " + BLANK, text)
    text = _TOKEN.sub(_token, text)
    text = _COORDINATE.sub(BLANK, text)
    return _PHONE.sub(_phone, text)


def _redacted(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message, arguments and exception text redacted.

    String arguments are redacted in place, so formatters that take the arguments
    apart (uvicorn's access log) still can; only when the filled-in message still
    needs it (a float argument that is a coordinate) is it replaced by its text.
    """
    changed = False
    if isinstance(record.msg, str):
        safe = redact(record.msg)
        changed, record.msg = safe != record.msg, safe
    if isinstance(record.args, tuple):
        args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        changed, record.args = changed or args != record.args, args
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # a malformed call: reported when written
        return record
    safe = redact(message)
    if safe != message:
        record.msg, record.args, changed = safe, None, True
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(text)  # handlers write exc_text when it is set
        changed = changed or record.exc_text != text
    if record.stack_info:
        safe = redact(record.stack_info)
        changed, record.stack_info = changed or safe != record.stack_info, safe
    if changed:
        record.redacted = True
    return record


_installed = False


def install() -> None:
    """Redact every log record of this process as it is made (once per process)."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redacted(make(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True
