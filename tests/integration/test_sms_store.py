"""The store's side of texts: linked to their notice whichever is kept first, final states
written once, gone with their notice when notices are purged (docs/sms.md)."""

from __future__ import annotations

from bangpae.adapters.housekeeping import run_purge
from bangpae.adapters.store import Store
from bangpae.domain.model import Order
from bangpae.domain.notices import service_notices
from bangpae.domain.retention import DAY_S, Policy

T0 = 1_700_000_000.0


def _notice(store: Store) -> tuple[int, object]:
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    oid = store.add_order(Order(0, off, vic, valid_from=T0 - DAY_S, valid_until=T0 + DAY_S))
    [notice] = service_notices([store.get_order(oid)], True, T0)
    return vic, notice


def test_a_receipt_before_its_notice_is_kept_shows_on_the_notice(store: Store) -> None:
    vic, notice = _notice(store)
    sms_id = store.add_sms(notice, vic, 1, T0)  # type: ignore[arg-type]
    store.sms_update(sms_id, state="submitted", message_id="m1", submitted_at=T0 + 1)
    store.sms_update(sms_id, state="delivered", done_at=T0 + 2)
    store.sms_update(sms_id, state="failed", done_at=T0 + 3)  # a late receipt: ignored
    [nid] = store.add_notices([(notice, {"sms": "queued"})])  # type: ignore[list-item]
    [kept] = store.notices(person_id=vic)
    assert kept.id == nid and kept.delivery["sms"] == "delivered"
    assert [(t["state"], t["done_at"]) for t in kept.sms] == [("delivered", T0 + 2)]
    assert store.sms_by_message_id("m1") == sms_id
    assert "phone" not in kept.as_dict()["sms"][0]


def test_texts_go_with_their_notice_when_notices_are_purged(store: Store) -> None:
    vic, notice = _notice(store)
    store.add_sms(notice, vic, 1, T0)  # type: ignore[arg-type]
    store.add_notices([(notice, {"sms": "queued"})])  # type: ignore[list-item]
    report = run_purge(store, Policy(), T0 + 400 * DAY_S)
    assert report.counts["notices"] == 1
    assert store.notices() == [] and store.sms(1) is None


def test_texts_still_queued_at_a_restart_are_recorded_as_failed(store: Store) -> None:
    vic, notice = _notice(store)
    sms_id = store.add_sms(notice, vic, 1, T0)  # type: ignore[arg-type]
    assert store.fail_unfinished_sms(T0 + 5, "interrupted by a restart") == 1
    row = store.sms(sms_id)
    assert row is not None and row["state"] == "failed" and row["error"].startswith("interr")
