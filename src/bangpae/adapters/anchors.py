"""The audit chain's head, anchored to an append-only file outside the database.

Each line names the newest audit record when it was written:
``<id> <sha256> <ISO time> <k|p> <tag>``, where ``k`` says the record carried a MAC and
``p`` that it was a plain record from before the audit key, and ``<tag>`` is an
HMAC-SHA256 of the rest of the line under the audit key. Lines of three fields come
from before the key existed; they are read, but never after a keyed line.

Someone able to rewrite the database can rebuild a valid-looking chain, but not the
records an anchor has already named, nor an anchor line: ``audit verify`` checks the
chain against every line. Changes after the newest anchor show only against the next
one, hence anchoring every few seconds while records are written (docs/audit-log.md).
A witness (syslog, or a second file kept elsewhere) can receive each line too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import syslog
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bangpae.adapters.store import AnchorMark, Store

_LINE = re.compile(r"^(\d+) ([0-9a-f]{64}) (\S+)(?: ([kp]) ([0-9a-f]{64}))?$")
_TAG_CONTEXT = b"bangpae-anchor-1 "
_TAIL_BYTES = 4096


class AnchorError(Exception):
    """An anchor file that cannot be read, or a chain that no longer matches its anchor."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """One anchored head: the record id and hash, when, and the file line it is on.

    ``keyed``: whether the record carried a MAC (None: a line from before the audit key);
    ``line`` 0 means the file's last line (read from its end only).
    """

    id: int
    hash: str
    at: str
    line: int
    keyed: bool | None = None

    def time(self) -> float | None:
        """When the anchor was written, in POSIX seconds (None: unreadable)."""
        try:
            return datetime.fromisoformat(self.at).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None

    def mark(self, path: Path) -> AnchorMark:
        """This anchor as the store's verification takes it."""
        where = f"line {self.line} of {path}" if self.line else f"the last line of {path}"
        return AnchorMark(self.id, self.hash, self.time(), self.keyed, where)


def anchor_tag(key: bytes, body: str) -> str:
    """The HMAC-SHA256 of an anchor line's first four fields under the audit key."""
    return hmac.new(key, _TAG_CONTEXT + body.encode("ascii"), hashlib.sha256).hexdigest()


def _parse(text: str, k: int, path: Path, key: bytes | None) -> Anchor:
    m = _LINE.match(text.strip())
    if m is None:
        raise AnchorError(f"{path} line {k or 'last'} is not '<id> <sha256> <time> <k|p> <tag>'")
    flag, tag = m.group(4), m.group(5)
    if flag is not None and key is not None:
        body = " ".join(m.group(1, 2, 3, 4))
        if not hmac.compare_digest(tag, anchor_tag(key, body)):
            raise AnchorError(
                f"{path} line {k or 'last'}: its tag does not match (forged, or another key)"
            )
    keyed = None if flag is None else flag == "k"
    return Anchor(int(m.group(1)), m.group(2), m.group(3), k, keyed)


def read_anchors(path: Path, key: bytes | None = None) -> list[Anchor]:
    """Every anchor in the file, oldest first (empty when there is no file yet).

    With ``key``, each keyed line's tag is checked; an unkeyed line after a keyed one,
    or a line naming an older record than the line before, is refused.
    """
    if not path.exists():
        return []
    out: list[Anchor] = []
    keyed_line = 0
    with path.open(encoding="ascii") as f:
        for k, text in enumerate(f, 1):
            if not text.strip():
                continue
            a = _parse(text, k, path, key)
            if a.keyed is None and keyed_line:
                raise AnchorError(f"{path} line {k} has no tag, after the keyed line {keyed_line}")
            if a.keyed is not None and not keyed_line:
                keyed_line = k
            if out and a.id < out[-1].id:
                raise AnchorError(
                    f"{path} line {k} anchors an older record than line {out[-1].line}"
                )
            out.append(a)
    return out


def latest_anchor(path: Path, key: bytes | None = None) -> Anchor | None:
    """The newest anchor in the file, if any, read from the file's end only."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    lines = [x for x in tail.splitlines() if x.strip()]
    if size > _TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    return _parse(lines[-1], 0, path, key) if lines else None


def append_anchor(
    path: Path,
    record_id: int,
    digest: str,
    at: float,
    *,
    key: bytes | None = None,
    keyed: bool = False,
    witness: str = "",
) -> str:
    """Append one anchor line and make it durable (tagged under ``key`` when given);
    send it to the witness too. The line written."""
    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = f"{record_id} {digest} {when}"
    if key is not None:
        body += f" {'k' if keyed else 'p'}"
        body += f" {anchor_tag(key, body)}"
    _append_line(path, body)
    if witness == "syslog":
        syslog.syslog(syslog.LOG_AUTHPRIV | syslog.LOG_NOTICE, f"bangpae audit anchor {body}")
    elif witness:
        _append_line(Path(witness), body)
    return body


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def anchor_problem(store: Store, anchor: Anchor) -> str | None:
    """Why the chain no longer holds the anchored record (None: it does). A quick check:
    one lookup by id while the record is there (it runs every few seconds)."""
    link = store.audit_link(anchor.id)
    if link is not None:
        if link[0] != anchor.hash:
            return (
                f"the anchored record {anchor.id} differs from the anchor: the chain was rewritten"
            )
        if anchor.keyed and not link[1]:
            return f"the anchored record {anchor.id} has lost its MAC: the chain was rewritten"
        return None
    base = store.audit_base()
    if base is not None and anchor.id <= base[0]:
        if (anchor.id, anchor.hash) == base:
            return None
        return f"the anchored record {anchor.id} was purged (the chain now starts after {base[0]})"
    return f"the anchored record {anchor.id} is missing: the chain was cut short"


def anchor_head(
    store: Store, path: Path, at: float, *, checked: bool = False, witness: str = ""
) -> tuple[int, str] | None:
    """Anchor the chain's head (unless it is anchored already); None when the chain is empty.

    Refuses (AnchorError) when the chain no longer matches the newest anchor: anchoring
    then would bless the tampered chain. ``checked``: the caller has just checked it
    (a purge does, before it may delete the anchored record). When the head is the one
    anchored last, this costs a read of the file's end and two lookups by id.
    """
    latest = latest_anchor(path, store.audit_key)
    if latest is not None and not checked:
        problem = anchor_problem(store, latest)
        if problem is not None:
            raise AnchorError(f"{problem} (anchor on the last line of {path})")
    tip = store.audit_tip()
    if tip is None:
        return None
    if latest is None or (latest.id, latest.hash) != tip[:2]:
        append_anchor(path, tip[0], tip[1], at, key=store.audit_key, keyed=tip[2], witness=witness)
    return tip[0], tip[1]


def anchor_marks(path: Path, key: bytes | None) -> list[AnchorMark]:
    """Every anchor of a file as the store's verification takes them (AnchorError: the
    file is malformed or a line forged)."""
    return [a.mark(path) for a in read_anchors(path, key)]
