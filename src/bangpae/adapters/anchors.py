"""The audit chain's head, anchored to an append-only file outside the database.

Each line is ``<id> <sha256> <ISO time>``: the newest audit record when it was written.
Someone able to rewrite the database can rebuild a valid-looking chain, but not the
records an anchor has already named: ``audit verify`` checks the chain against the
newest anchor, so a tail cut short or rewritten up to that point shows. Changes after
the newest anchor show only against the next one, hence anchoring on a schedule.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bangpae.adapters.store import Store

_LINE = re.compile(r"^(\d+) ([0-9a-f]{64}) (\S+)$")


class AnchorError(Exception):
    """An anchor file that cannot be read, or a chain that no longer matches its anchor."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """One anchored head: the record id and hash, when, and the file line it is on."""

    id: int
    hash: str
    at: str
    line: int


def read_anchors(path: Path) -> list[Anchor]:
    """Every anchor in the file, oldest first (empty when there is no file yet)."""
    if not path.exists():
        return []
    out: list[Anchor] = []
    for k, text in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        if not text.strip():
            continue
        m = _LINE.match(text.strip())
        if m is None:
            raise AnchorError(f"{path} line {k} is not '<id> <sha256> <time>'")
        out.append(Anchor(int(m.group(1)), m.group(2), m.group(3), k))
        if len(out) > 1 and out[-1].id < out[-2].id:
            raise AnchorError(f"{path} line {k} anchors an older record than line {out[-2].line}")
    return out


def latest_anchor(path: Path) -> Anchor | None:
    """The newest anchor in the file, if any."""
    anchors = read_anchors(path)
    return anchors[-1] if anchors else None


def append_anchor(path: Path, record_id: int, digest: str, at: float) -> None:
    """Append one anchor line and make it durable."""
    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{record_id} {digest} {when}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def anchor_problem(store: Store, anchor: Anchor) -> str | None:
    """Why the chain no longer holds the anchored record (None: it does). A quick check."""
    base = store.audit_base()
    if base is not None and anchor.id <= base[0]:
        if (anchor.id, anchor.hash) == base:
            return None
        return f"the anchored record {anchor.id} was purged (the chain now starts after {base[0]})"
    digest = store.audit_hash_of(anchor.id)
    if digest is None:
        return f"the anchored record {anchor.id} is missing: the chain was cut short"
    if digest != anchor.hash:
        return f"the anchored record {anchor.id} differs from the anchor: the chain was rewritten"
    return None


def anchor_head(
    store: Store, path: Path, at: float, *, checked: bool = False
) -> tuple[int, str] | None:
    """Anchor the chain's head (unless it is anchored already); None when the chain is empty.

    Refuses (AnchorError) when the chain no longer matches the newest anchor: anchoring
    then would bless the tampered chain. ``checked``: the caller has just checked it
    (a purge does, before it may delete the anchored record).
    """
    latest = latest_anchor(path)
    if latest is not None and not checked:
        problem = anchor_problem(store, latest)
        if problem is not None:
            raise AnchorError(f"{problem} (anchor at {path} line {latest.line})")
    head = store.audit_head()
    if head is None:
        return None
    if latest is None or (latest.id, latest.hash) != head:
        append_anchor(path, head[0], head[1], at)
    return head
