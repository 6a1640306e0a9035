"""An audit record as its writer makes it: who did what, to whom, why and when
(docs/audit-log.md). The store gives it its id and its place in the hash chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit record to append.

    ``actor`` is who (``user:<id>:<name>``, ``cli``, ``system``) in which ``role``;
    ``action`` what was done to ``subject`` (``device:7``, ``order:3/offender``) for
    ``purpose``; ``fields`` the fields read or ``key=value`` notes, kept as strings in
    their order; ``at`` when; ``request_id`` the request it was made in, if any.
    """

    actor: str
    role: str
    action: str
    subject: str
    purpose: str
    fields: Sequence[str] = ()
    _: KW_ONLY
    at: float
    request_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(str(x) for x in self.fields))
