"""A case on disk: one order exported to a directory of checksummed files, and imported back.

The directory holds, per table, ``<table>.jsonl`` (one JSON object per row: what an
import reads) and ``<table>.csv`` (for people and spreadsheets); the fixes also as
``fixes.geojson``; the audit records concerning the case as ``audit.jsonl`` /
``audit.csv``; ``manifest.json`` (format, schema version, order, counts, when and where
from); and ``MANIFEST.sha256`` (``sha256sum -c`` checks it) over every other file.

Recordings kept as evidence of the case's SOS incidents (docs/evidence.md) are written
opened, each as a file under ``evidence/`` (as the phone recorded it), and listed in
``evidence.jsonl`` (incident, times, type, size, SHA-256, file): the SHA-256 is the one
computed when the recording arrived, so a court can check that the file is what the
phone sent. Both are in ``MANIFEST.sha256``. A case without ``evidence.jsonl`` (exported
before recordings existed) has none.

Floats are written with ``repr`` (JSON and CSV alike), which Python reads back as the
same double, so ids, times and values survive a round trip exactly. An import checks
every checksum before it reads anything else, and refuses a case whose ids are already
in the database: a case is imported once (importing again is refused, never merged).
The audit records travel as evidence, each with its chain hashes; they are checked on
import but not inserted, since another instance's records cannot join this chain: the
import's own audit record names the manifest's digest instead.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

from sqlalchemy.engine import make_url

from bangpae.adapters.store import Store
from bangpae.adapters.store.audit import audit_hash
from bangpae.adapters.store.case import (
    AUDIT_COLUMNS,
    CASE_TABLES,
    case_columns,
    case_table,
    check_value,
)
from bangpae.adapters.store.evidence import EvidenceRecord
from bangpae.domain.audit import AuditEntry
from bangpae.domain.errors import Conflict, Invalid, NotFound

FORMAT = "bangpae-case"
SCHEMA_VERSION = 1
MANIFEST = "MANIFEST.sha256"
MANIFEST_JSON = "manifest.json"
PROGRESS_EVERY = 100_000
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
EVIDENCE_DIR = "evidence"
EVIDENCE_LIST = "evidence.jsonl"
# A recording's file: its id and the start of its digest, and the extension of its type.
_EVIDENCE_FILE = re.compile(r"^evidence/[0-9]{1,18}-[0-9a-f]{16}\.(webm|ogg|m4a)$")
_EXTENSIONS = {"audio/webm": "webm", "audio/ogg": "ogg", "audio/mp4": "m4a"}
_EVIDENCE_COLUMNS = {
    "id": int,
    "incident_id": int,
    "person_id": int,
    "uploaded_at": float,
    "recorded_at": float,
    "content_type": str,
    "size": int,
    "sha256": str,
    "uploaded_by": str,
    "file": str,
}


class CaseFileError(Exception):
    """A case directory that cannot be written, or that fails its checks on import."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _json(value: Any) -> str:
    # Python's float repr is the shortest string that reads back as the same double.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return _json(value)
    return str(value)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _create(path: Path) -> IO[str]:
    # Case files are personal data: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return open(fd, "w", encoding="utf-8", newline="")


def _write_evidence(
    store: Store, out: Path, incident_ids: list[int], progress: TextIO | None
) -> list[str]:
    """The recordings of these incidents as files under ``evidence/``, opened, and their
    list ``evidence.jsonl``; the names written."""
    files = [EVIDENCE_LIST]
    (out / EVIDENCE_DIR).mkdir(mode=0o700)
    with _create(out / EVIDENCE_LIST) as listing:
        for record, data in store.case_evidence(incident_ids):
            name = _evidence_name(record)
            fd = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as f:
                f.write(data)
            listing.write(_json(_evidence_row(record, name)) + "\n")
            files.append(name)
    if progress is not None:
        print(f"export: evidence: {len(files) - 1} recordings", file=progress, flush=True)
    return files


def _evidence_name(record: EvidenceRecord) -> str:
    return f"{EVIDENCE_DIR}/{record.id}-{record.sha256[:16]}.{_EXTENSIONS[record.content_type]}"


def _evidence_row(record: EvidenceRecord, name: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "incident_id": record.incident_id,
        "person_id": record.person_id,
        "uploaded_at": record.uploaded_at,
        "recorded_at": record.recorded_at,
        "content_type": record.content_type,
        "size": record.size,
        "sha256": record.sha256,
        "uploaded_by": record.uploaded_by,
        "file": name,
    }


class _TableWriter:
    """Writes one table's rows to its JSON Lines and CSV files (and fixes to GeoJSON)."""

    def __init__(self, out: Path, name: str, columns: list[str]) -> None:
        self.name, self.columns, self.n = name, columns, 0
        self.files = [f"{name}.jsonl", f"{name}.csv"]
        self.jsonl = _create(out / f"{name}.jsonl")
        self.csv_file = _create(out / f"{name}.csv")
        self.csv = csv.writer(self.csv_file, lineterminator="\n")
        self.csv.writerow(columns)
        self.geojson: IO[str] | None = None
        if name == "fixes":
            self.files.append("fixes.geojson")
            self.geojson = _create(out / "fixes.geojson")
            self.geojson.write('{"type":"FeatureCollection","features":[')

    def write(self, row: Mapping[str, Any]) -> None:
        self.jsonl.write(_json(row) + "\n")
        self.csv.writerow([_cell(row[c]) for c in self.columns])
        if self.geojson is not None:
            feature = {
                "type": "Feature",
                "id": row["id"],
                "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                "properties": {k: v for k, v in row.items() if k not in ("id", "lat", "lon")},
            }
            self.geojson.write(("," if self.n else "") + "\n" + _json(feature))
        self.n += 1

    def close(self) -> None:
        if self.geojson is not None:
            self.geojson.write("\n]}\n")
            self.geojson.close()
        self.jsonl.close()
        self.csv_file.close()


def export_case(
    store: Store,
    order_id: int,
    out: Path,
    *,
    now: float,
    actor: str = "cli",
    role: str = "admin",
    purpose: str = "case export",
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Write one order's case to ``out`` (new or empty), audited; return the manifest."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CaseFileError(f"{out} exists and is not an empty directory")
    if store.get_order(order_id) is None:
        raise NotFound(f"order {order_id} does not exist")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    files: list[str] = []
    incident_ids: list[int] = []
    for name, rows in store.case_tables(order_id):
        columns = list(AUDIT_COLUMNS) if name == "audit" else case_columns(name)
        w = _TableWriter(out, name, columns)
        try:
            for row in rows:
                w.write(row)
                if name == "incidents":
                    incident_ids.append(int(row["id"]))
                if progress is not None and w.n % PROGRESS_EVERY == 0:
                    print(f"export: {name}: {w.n} rows ...", file=progress, flush=True)
        finally:
            w.close()
        counts[name], files = w.n, files + w.files
        if progress is not None:
            print(f"export: {name}: {w.n} rows", file=progress, flush=True)
    written = _write_evidence(store, out, incident_ids, progress)
    counts["evidence"], files = len(written) - 1, files + written
    head = store.audit_head()
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "order_id": order_id,
        "exported_at": _iso(now),
        "source": {
            "host": socket.gethostname(),
            "database": make_url(store.url).render_as_string(hide_password=True),
            "schema_revision": store.schema_revision(),
            "audit_head": None if head is None else {"id": head[0], "hash": head[1]},
        },
        "counts": counts,
        "files": sorted(files),
    }
    with _create(out / MANIFEST_JSON) as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with _create(out / MANIFEST) as f:
        for name in sorted([*files, MANIFEST_JSON]):
            f.write(f"{sha256_file(out / name)}  {name}\n")
    digest = sha256_file(out / MANIFEST)
    store.audit_append(
        AuditEntry(
            actor,
            role,
            "export",
            f"order:{order_id}",
            purpose,
            [f"out={out.resolve()}", f"manifest_sha256={digest}"]
            + [f"{k}={v}" for k, v in counts.items()],
            at=now,
        )
    )
    return manifest


def _listing(directory: Path) -> dict[str, str]:
    """The files ``MANIFEST.sha256`` lists, with their digests (not yet checked)."""
    listing = directory / MANIFEST
    if not listing.is_file():
        raise CaseFileError(f"{MANIFEST} is missing from {directory}")
    listed: dict[str, str] = {}
    for k, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        m = _LINE.match(line)
        if m is None:
            raise CaseFileError(f"{MANIFEST} line {k} is not '<sha256>  <file>'")
        digest, name = m.groups()
        top = name == Path(name).name and not name.startswith(".") and name != MANIFEST
        if not (top or _EVIDENCE_FILE.match(name)):
            raise CaseFileError(f"{MANIFEST} line {k} names {name!r}, not a file of the case")
        listed[name] = digest
    return listed


def verify_case(directory: Path) -> dict[str, Any]:
    """Check every checksum of a case directory first, then its manifest; return it."""
    if not directory.is_dir():
        raise CaseFileError(f"{directory} is not a directory")
    listed = _listing(directory)
    for name, digest in sorted(listed.items()):
        path = directory / name
        if not path.is_file():
            raise CaseFileError(f"{name} is listed in {MANIFEST} but missing")
        if sha256_file(path) != digest:
            raise CaseFileError(f"checksum mismatch: {name} is not the file that was exported")
    present = [p.name for p in directory.iterdir() if p.name != EVIDENCE_DIR]
    evidence_dir = directory / EVIDENCE_DIR
    if evidence_dir.is_dir() and not evidence_dir.is_symlink():
        present += [f"{EVIDENCE_DIR}/{p.name}" for p in evidence_dir.iterdir()]
    elif evidence_dir.exists() or evidence_dir.is_symlink():
        present.append(EVIDENCE_DIR)
    unlisted = sorted(name for name in present if name not in (*listed, MANIFEST))
    if unlisted:
        raise CaseFileError(f"{unlisted[0]} is in the case directory but not in {MANIFEST}")
    if MANIFEST_JSON not in listed:
        raise CaseFileError(f"{MANIFEST_JSON} is not listed in {MANIFEST}")
    try:
        manifest = json.loads((directory / MANIFEST_JSON).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CaseFileError(f"{MANIFEST_JSON} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CaseFileError(f"{MANIFEST_JSON}: not a {FORMAT} manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CaseFileError(
            f"{MANIFEST_JSON}: schema version {manifest.get('schema_version')!r} "
            f"(this version reads {SCHEMA_VERSION})"
        )
    if not isinstance(manifest.get("order_id"), int) or not isinstance(
        manifest.get("counts"), dict
    ):
        raise CaseFileError(f"{MANIFEST_JSON}: order_id or counts missing")
    for name in (*CASE_TABLES, "audit"):
        if f"{name}.jsonl" not in listed:
            raise CaseFileError(f"{name}.jsonl is not listed in {MANIFEST}")
    recordings = [x for x in listed if x.startswith(f"{EVIDENCE_DIR}/")]
    if recordings and EVIDENCE_LIST not in listed:
        raise CaseFileError(f"{recordings[0]} is in the case but {EVIDENCE_LIST} is not")
    return manifest


def _checked_evidence(
    directory: Path, listed: Mapping[str, str], incident_ids: set[Any], expected: Any
) -> list[dict[str, Any]]:
    """The recordings ``evidence.jsonl`` lists, each checked against its file: the digest
    the file arrived with is the one ``MANIFEST.sha256`` holds for it, its size is the
    file's, its type is one kept, its incident is one of the case's; every recording
    file is listed once."""
    if EVIDENCE_LIST not in listed:
        if expected not in (None, 0):
            raise CaseFileError(f"{MANIFEST_JSON} counts recordings, {EVIDENCE_LIST} is missing")
        return []
    out: list[dict[str, Any]] = []
    named: set[str] = set()
    for k, row in _lines(directory / EVIDENCE_LIST):
        where = f"{EVIDENCE_LIST} line {k}"
        if set(row) != set(_EVIDENCE_COLUMNS):
            raise CaseFileError(f"{where}: columns {sorted(row)}, not {sorted(_EVIDENCE_COLUMNS)}")
        for col, kind in _EVIDENCE_COLUMNS.items():
            value = row[col]
            if value is None and col == "recorded_at":
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = row[col] = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise CaseFileError(f"{where}: {col} {value!r} is not a {kind.__name__}")
        name = row["file"]
        if not _EVIDENCE_FILE.match(name) or name not in listed or name in named:
            raise CaseFileError(f"{where}: file {name!r} is not a listed recording of the case")
        named.add(name)
        if row["content_type"] not in _EXTENSIONS or not name.endswith(
            "." + _EXTENSIONS[row["content_type"]]
        ):
            raise CaseFileError(f"{where}: type {row['content_type']!r} does not match {name}")
        if listed[name] != row["sha256"]:
            raise CaseFileError(
                f"{where}: {name} is not the recording that arrived (its SHA-256 differs)"
            )
        if (directory / name).stat().st_size != row["size"]:
            raise CaseFileError(f"{where}: {name} is not {row['size']} bytes long")
        if row["incident_id"] not in incident_ids:
            raise CaseFileError(f"{where}: incident {row['incident_id']} is not in the case")
        out.append(row)
    unnamed = sorted(x for x in listed if x.startswith(f"{EVIDENCE_DIR}/") and x not in named)
    if unnamed:
        raise CaseFileError(f"{unnamed[0]} is not in {EVIDENCE_LIST}")
    if len(out) != (expected or 0):
        raise CaseFileError(f"{EVIDENCE_LIST} has {len(out)} rows, the manifest disagrees")
    return out


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise CaseFileError(f"{path.name} line {k} is not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise CaseFileError(f"{path.name} line {k} is not a JSON object")
            yield k, row


def _checked_rows(directory: Path, name: str, expected: int) -> Iterator[dict[str, Any]]:
    """A table's rows from its JSON Lines file, every value checked against its column."""
    table = case_table(name)
    allowed = set(case_columns(name))
    n = 0
    for k, row in _lines(directory / f"{name}.jsonl"):
        unknown = set(row) - allowed
        if unknown:
            raise CaseFileError(f"{name}.jsonl line {k}: unknown column {sorted(unknown)[0]!r}")
        try:
            yield {c: check_value(name, table.c[c], v) for c, v in row.items()}
        except Invalid as exc:
            raise CaseFileError(f"{name}.jsonl line {k}: {exc}") from exc
        n += 1
    if n != expected:
        raise CaseFileError(f"{name}.jsonl has {n} rows, the manifest says {expected}")


def _check_audit(directory: Path) -> int:
    """Each exported audit record still matches its own chain hash; how many there are."""
    n = 0
    for k, row in _lines(directory / "audit.jsonl"):
        try:
            record = {c: row[c] for c in AUDIT_COLUMNS if c not in ("prev_hash", "hash")}
            ok = audit_hash(str(row["prev_hash"]), record) == row["hash"]
        except KeyError as exc:
            raise CaseFileError(f"audit.jsonl line {k}: {exc.args[0]!r} missing") from exc
        if not ok:
            raise CaseFileError(f"audit.jsonl line {k}: record does not match its hash")
        n += 1
    return n


def import_case(
    store: Store,
    directory: Path,
    *,
    now: float,
    actor: str = "cli",
    role: str = "admin",
    progress: TextIO | None = None,
) -> dict[str, int]:
    """Verify a case directory, then import it whole into this database, audited."""
    manifest = verify_case(directory)
    counts: Mapping[str, Any] = manifest["counts"]
    order_id = int(manifest["order_id"])
    audit_records = _check_audit(directory)
    if audit_records != counts.get("audit"):
        raise CaseFileError(f"audit.jsonl has {audit_records} rows, the manifest disagrees")
    ids: dict[str, list[Any]] = {"orders": [order_id]}
    for name in ("people", "devices", "incidents"):
        ids[name] = [row.get("id") for _, row in _lines(directory / f"{name}.jsonl")]
    recordings = _checked_evidence(
        directory, _listing(directory), set(ids["incidents"]), counts.get("evidence")
    )
    taken = store.case_id_taken(ids)
    if taken is not None:
        raise CaseFileError(
            f"this database already holds {taken[0]} id {taken[1]}: the case was imported "
            "before, or the ids clash; import only into an instance without them"
        )
    digest = sha256_file(directory / MANIFEST)
    source = manifest.get("source") or {}

    def rows(name: str) -> Iterable[dict[str, Any]]:
        if name == "evidence":
            for row in recordings:  # each file read once the tables are in
                data = (directory / row["file"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != row["sha256"]:
                    raise CaseFileError(f"{row['file']} changed while the case was imported")
                yield {k: v for k, v in row.items() if k != "file"} | {"bytes": data}
            return
        expected = counts.get(name)
        if not isinstance(expected, int):
            raise CaseFileError(f"{MANIFEST_JSON}: no count for {name}")
        n = 0
        for row in _checked_rows(directory, name, expected):
            n += 1
            yield row
        if progress is not None:
            print(f"import: {name}: {n} rows", file=progress, flush=True)

    def audit(done: Mapping[str, int]) -> tuple[str, str, str, str, list[str], float]:
        fields = [
            f"source_host={source.get('host', '')}",
            f"source_exported_at={manifest.get('exported_at', '')}",
            f"manifest_sha256={digest}",
            f"audit_records={audit_records}",
        ] + [f"{k}={v}" for k, v in done.items()]
        return actor, role, f"order:{order_id}", "case import", fields, now

    try:
        return store.import_case(rows, audit)
    except (Invalid, Conflict) as exc:
        raise CaseFileError(str(exc)) from exc


def data_checksums(directory: Path) -> dict[str, str]:
    """The listed checksums of a case's data files (not the manifest, not the audit trail)."""
    out = {}
    for line in (directory / MANIFEST).read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if name != MANIFEST_JSON and not name.startswith("audit."):
            out[name] = digest
    return out
