"""Recordings kept as evidence of an SOS: the victim app uploads them, the control centre
lists and hears them (docs/evidence.md).

The type a client names is not trusted: the bytes are sniffed, and only the containers
a phone's recorder makes are kept (WebM and Ogg with Opus, MP4 with AAC). Each upload and
the incident's recordings together are bounded; the bytes are sealed with the data keys
before they are stored. Every upload and every read is audited; an upload's audit record
names the digest, the type and the size, never the content.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from bangpae.adapters.store.evidence import EvidenceFull, EvidenceRecord
from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx, RequestId, require
from bangpae.api.schemas import IdPath
from bangpae.domain.access import EVIDENCE_READERS, Purpose
from bangpae.domain.audit import AuditEntry
from bangpae.domain.disclosure import iso
from bangpae.services import sos
from bangpae.services.access import actor
from bangpae.services.auth import Principal

MAX_UPLOAD = 8 * 1024 * 1024  # one recording: 60 s of AAC at 256 kbit/s is under 2 MB
MAX_PER_INCIDENT = 32 * 1024 * 1024  # every recording of one SOS together
MAX_RECORDINGS = 64  # of one SOS
CLOSED_WINDOW_S = 24 * 3600.0  # a closed SOS still takes the recordings of its last day
FUTURE_S = 300.0  # X-Recorded-At may be at most this far ahead of the server's clock
PAST_S = 24 * 3600.0  # ... and at most this long before the SOS was opened
FINAL = ("resolved", "false_alarm")
UPLOAD_PATH = re.compile(r"^/api/v1/victim/sos/[0-9]{1,19}/evidence$")

router = APIRouter(prefix="/api/v1", tags=["evidence"])
Victim = Annotated[Principal, Depends(require("victim"))]
# Who may read, and why, is the access policy's [evidence] table, among these roles.
Reader = Annotated[Principal, Depends(require(*EVIDENCE_READERS))]
PurposeQuery = Annotated[Purpose, Query(description="Why: one of the fixed purposes.")]


def body_limit(path: str, default: int) -> int:
    """The most bytes a request to ``path`` may carry: a recording's limit for an upload."""
    return MAX_UPLOAD if UPLOAD_PATH.match(path) else default


def sniff(data: bytes) -> str | None:
    """The type of a recording from its first bytes: ``audio/webm`` (an EBML header whose
    document type is webm), ``audio/ogg`` (an Ogg page starting an Opus stream) or
    ``audio/mp4`` (an ISO media file of an MP4 or M4A brand); None for anything else."""
    head = data[:64]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # EBML DocType element (0x4282), one-byte size 0x84, then "webm"
        return "audio/webm" if b"\x42\x82\x84webm" in head else None
    if head.startswith(b"OggS") and b"OpusHead" in head:
        return "audio/ogg"
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _MP4_BRANDS:
        return "audio/mp4"
    return None


# Major brands of the MP4 files phones' recorders write (Safari: iso5/mp42/M4A).
_MP4_BRANDS = frozenset({b"M4A ", b"mp42", b"mp41", b"isom", b"iso5", b"iso6", b"iso2", b"dash"})


def _public(r: EvidenceRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "incident_id": r.incident_id,
        "uploaded_at": iso(r.uploaded_at),
        "recorded_at": None if r.recorded_at is None else iso(r.recorded_at),
        "content_type": r.content_type,
        "size": r.size,
        "sha256": r.sha256,
    }


def _recorded_at(value: str | None, opened_at: float, now: float) -> float | None:
    """X-Recorded-At as a time, bounded (422 when it cannot be true)."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, "X-Recorded-At is not an ISO time") from None
    if t.tzinfo is None:
        raise HTTPException(422, "X-Recorded-At needs a zone, e.g. 2026-11-23T09:00:00+09:00")
    at = t.timestamp()
    if at > now + FUTURE_S or at < opened_at - PAST_S:
        raise HTTPException(422, "X-Recorded-At is too far from the SOS")
    return at


def _her_sos(ctx: RouteContext, who: Principal, incident_id: int, now: float) -> Any:
    """Her own SOS incident, open or closed within a day; 404 for anything else."""
    record = ctx.store.get_incident(incident_id)
    mine = False
    if record is not None and record.kind == "sos" and who.person_id is not None:
        if record.person_id is not None:  # raised by her own device, not his
            mine = record.person_id == who.person_id
        elif record.order_id is not None:
            order = ctx.store.get_order(record.order_id)
            mine = order is not None and order.victim_id == who.person_id
        if mine and sos.hidden(record):  # her duress PIN's: never hers to name (docs/sos.md)
            mine = False
        if mine and record.status in FINAL:
            mine = now - (record.updated_at or record.opened_at) <= CLOSED_WINDOW_S
    if not mine:
        # whether it exists is not her business unless it is hers
        raise HTTPException(404, f"no SOS {incident_id} of yours takes recordings")
    return record


@router.post(
    "/victim/sos/{incident_id}/evidence",
    status_code=201,
    max_body_size=MAX_UPLOAD,
    responses={200: {"description": "The same bytes were kept already: the same record."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The recording as the phone made it; its type is read from its bytes.",
            "content": {
                kind: {"schema": {"type": "string", "format": "binary"}}
                for kind in ("audio/webm", "audio/ogg", "audio/mp4", "application/octet-stream")
            },
        }
    },
)
async def upload_evidence(
    incident_id: IdPath,
    request: Request,
    ctx: Ctx,
    who: Victim,
    rid: RequestId,
    x_recorded_at: Annotated[str | None, Header(max_length=64)] = None,
) -> Any:
    """A recording made on her phone after her SOS (raw bytes): kept sealed, once."""
    now = ctx.clock.now()
    record = await asyncio.to_thread(_her_sos, ctx, who, incident_id, now)
    recorded_at = _recorded_at(x_recorded_at, record.opened_at, now)
    data = await request.body()
    if len(data) > MAX_UPLOAD:  # pragma: no cover - the route's body limit stops it first
        raise HTTPException(413, f"a recording is limited to {MAX_UPLOAD} bytes")
    content_type = sniff(data)
    if content_type is None:
        raise HTTPException(415, "a recording must be WebM or Ogg with Opus, or MP4 with AAC")
    assert who.person_id is not None  # _her_sos admits only a person's own SOS
    try:
        kept, new = await asyncio.to_thread(
            ctx.store.add_evidence,
            incident_id,
            who.person_id,
            data,
            content_type,
            at=now,
            recorded_at=recorded_at,
            uploaded_by=actor(who),
            max_total=MAX_PER_INCIDENT,
            max_count=MAX_RECORDINGS,
        )
    except EvidenceFull as exc:
        raise HTTPException(413, str(exc)) from None
    await asyncio.to_thread(
        ctx.store.audit_append,
        AuditEntry(
            actor=actor(who),
            role=who.role,
            action="evidence_upload",
            subject=f"incident:{incident_id}/evidence:{kept.id}",
            purpose="sos_evidence",
            fields=[
                f"sha256={kept.sha256}",
                f"size={kept.size}",
                f"content_type={kept.content_type}",
                f"new={'true' if new else 'false'}",
            ],
            at=now,
            request_id=rid,
        ),
    )
    body = {
        "id": kept.id,
        "sha256": kept.sha256,
        "size": kept.size,
        "content_type": kept.content_type,
    }
    return JSONResponse(body, status_code=201 if new else 200)


def _may_read(ctx: RouteContext, who: Principal, purpose: Purpose) -> None:
    if not ctx.access_policy.may_read_evidence(who.role, purpose.value):
        raise HTTPException(403, f"role {who.role!r} may not hear recordings for {purpose.value!r}")


def _audit_read(
    ctx: RouteContext,
    who: Principal,
    subject: str,
    purpose: Purpose,
    fields: list[str],
    now: float,
    rid: str,
) -> None:
    ctx.store.audit_append(
        AuditEntry(
            actor=actor(who),
            role=who.role,
            action="read_evidence",
            subject=subject,
            purpose=purpose.value,
            fields=fields,
            at=now,
            request_id=rid,
        )
    )


@router.get("/incidents/{incident_id}/evidence")
async def list_evidence(
    incident_id: IdPath, ctx: Ctx, who: Reader, rid: RequestId, purpose: PurposeQuery
) -> dict[str, Any]:
    """An incident's recordings (what, when, how big, their SHA-256), for a purpose; audited."""
    _may_read(ctx, who, purpose)
    now = ctx.clock.now()

    def read() -> list[EvidenceRecord]:
        if ctx.store.get_incident(incident_id) is None:
            raise HTTPException(404, f"incident {incident_id} does not exist")
        records: list[EvidenceRecord] = ctx.store.incident_evidence(incident_id)
        fields = ["list", f"count={len(records)}"]
        _audit_read(ctx, who, f"incident:{incident_id}", purpose, fields, now, rid)
        return records

    records = await asyncio.to_thread(read)
    return {"incident_id": incident_id, "evidence": [_public(r) for r in records]}


@router.get(
    "/evidence/{evidence_id}",
    response_class=Response,
    responses={200: {"content": {"audio/webm": {}, "audio/ogg": {}, "audio/mp4": {}}}},
)
async def get_evidence(
    evidence_id: IdPath, ctx: Ctx, who: Reader, rid: RequestId, purpose: PurposeQuery
) -> Response:
    """One recording's bytes as they arrived, for a purpose; audited before it is sent."""
    _may_read(ctx, who, purpose)
    now = ctx.clock.now()
    got = await asyncio.to_thread(ctx.store.evidence_with_bytes, evidence_id)
    if got is None:
        raise HTTPException(404, f"recording {evidence_id} does not exist")
    record, data = got
    subject = f"incident:{record.incident_id}/evidence:{record.id}"
    fields = [f"sha256={record.sha256}", f"size={record.size}"]
    await asyncio.to_thread(_audit_read, ctx, who, subject, purpose, fields, now, rid)
    ext = {"audio/webm": "webm", "audio/ogg": "ogg", "audio/mp4": "m4a"}[record.content_type]
    return Response(
        data,
        media_type=record.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="evidence-{record.id}.{ext}"',
            "Cache-Control": "no-store",
            "X-Content-SHA256": record.sha256,
        },
    )
