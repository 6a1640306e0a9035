"""Phone numbers and order zones encrypted at rest, on SQLite and PostgreSQL.

The raw rows hold only sealed values; the store gives them back opened; a rotation
re-seals them so the newest key alone reads everything; wrong or missing keys fail
loudly; plaintext from before encryption is read, then sealed by a rotation; a case
file carries the values opened and an import seals them again.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from bangpae.adapters.casefile import data_checksums, export_case, import_case
from bangpae.adapters.crypto import KEY_FILE, DataKeyError, FieldCipher, new_key
from bangpae.adapters.store import Store
from bangpae.adapters.store import schema as tables
from bangpae.app import open_store
from bangpae.cli import main
from bangpae.config import Settings
from bangpae.domain.errors import Invalid
from bangpae.domain.model import Order, WeeklyWindow, Zone

PHONE = "+821012345678"
HOME = Zone(
    "home",
    "Victim home, Sejong-daero 110",
    {"type": "Point", "coordinates": [126.9779692, 37.5662952]},
    radius_m=250.0,
)
SCHOOL = Zone(
    "school",
    "Daughter's school",
    {
        "type": "Polygon",
        "coordinates": [
            [[126.9811, 37.5701], [126.9831, 37.5701], [126.9831, 37.5721], [126.9811, 37.5701]]
        ],
    },
    schedule=(WeeklyWindow(0, 480, 960),),
)
CURFEW = Zone(
    "residence",
    "Offender residence, Mapo-gu",
    {"type": "Point", "coordinates": [126.9019, 37.5663]},
    radius_m=100.0,
    schedule=tuple(WeeklyWindow(d, 1320, 1440) for d in range(7)),  # 22:00 to midnight
)
SECRETS = ("Sejong", "126.977", "37.566", "Daughter", "126.981", "Mapo", "126.901", "1012345678")


def phone_fits(store: Store) -> bool:
    """Whether people.phone can hold an encrypted number on this backend.

    SQLite keeps any length; PostgreSQL enforces the declared VARCHAR(64), too narrow for
    the ~105 characters of a sealed number until the column is widened.
    """
    length = tables.people.c.phone.type.length  # type: ignore[attr-defined]
    return store.dialect == "sqlite" or length is None or length >= 200


def need_phone(store: Store) -> None:
    if not phone_fits(store):
        pytest.skip("people.phone is VARCHAR(64): too narrow for an encrypted number")


def _make(store: Store) -> tuple[int, int, int]:
    off = store.add_person("offender", "Offender")
    vic = store.add_person("victim", "Victim")
    order = Order(0, off, vic, zones=(HOME, SCHOOL), curfews=(CURFEW,), valid_from=1.0)
    return off, vic, store.add_order(order, at=1.0)


def _raw(store: Store) -> str:
    """Every people and orders row as the database holds it, read with plain SQL."""
    with store.engine.connect() as c:
        people = c.execute(text("SELECT id, name, phone FROM people ORDER BY id")).all()
        orders = c.execute(
            text("SELECT id, CAST(zones AS TEXT), CAST(curfews AS TEXT) FROM orders ORDER BY id")
        ).all()
    return json.dumps([list(r) for r in people] + [list(r) for r in orders])


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def sealed(database_url: str, key: str) -> Iterator[Store]:
    s = Store(database_url, cipher=FieldCipher([key]))
    s.migrate()
    yield s
    s.close()


def test_the_rows_hold_neither_zone_names_nor_coordinates(sealed: Store) -> None:
    _make(sealed)
    raw = _raw(sealed)
    assert not [x for x in SECRETS if x in raw]
    with sealed.engine.connect() as c:
        zones, curfews = c.execute(
            text("SELECT CAST(zones AS TEXT), CAST(curfews AS TEXT) FROM orders")
        ).one()
    assert zones.startswith('"enc1:') and curfews.startswith('"enc1:')  # a JSON string


def test_the_row_holds_no_phone_number(sealed: Store) -> None:
    need_phone(sealed)
    _, vic, _ = _make(sealed)
    sealed.set_person_phone(vic, PHONE)
    with sealed.engine.connect() as c:
        raw = c.execute(text("SELECT phone FROM people WHERE id = :id"), {"id": vic}).scalar()
    assert raw.startswith("enc1:") and "1012345678" not in raw
    assert sealed.person_phone(vic) == PHONE
    sealed.set_person_phone(vic, None)
    assert sealed.person_phone(vic) is None


def test_the_store_gives_them_back_opened(sealed: Store) -> None:
    off, vic, oid = _make(sealed)
    got = sealed.get_order(oid)
    assert got is not None
    assert got.zones == (HOME, SCHOOL) and got.curfews == (CURFEW,)
    assert sealed.orders_for_person(vic) == [got] == sealed.orders_for_person(off)
    assert sealed.load_all()[2] == [got]


def test_a_rotation_reseals_so_the_newest_key_alone_reads_everything(
    sealed: Store, key: str, database_url: str
) -> None:
    _, vic, oid = _make(sealed)
    if phone_fits(sealed):
        sealed.set_person_phone(vic, PHONE)
    before, order = _raw(sealed), sealed.get_order(oid)
    newer = new_key()
    sealed.cipher = FieldCipher([newer, key])
    counts = sealed.reseal_fields()
    phones = 1 if phone_fits(sealed) else 0
    assert counts == {
        "people.phone": {"resealed": phones, "sealed": 0},
        "orders.zones": {"resealed": 1, "sealed": 0},
        "orders.curfews": {"resealed": 1, "sealed": 0},
        "events.data": {"resealed": 0, "sealed": 0},
        "incident_entries.data": {"resealed": 0, "sealed": 0},
        "handoffs.summary": {"resealed": 0, "sealed": 0},
        "fixes.position": {"resealed": 0, "sealed": 0, "current": 0},
        "evidence.blob": {"resealed": 0, "sealed": 0, "current": 0},
    }
    after = _raw(sealed)
    assert after != before and not [x for x in SECRETS if x in after]
    alone = Store(database_url, cipher=FieldCipher([newer]))  # the old key dropped
    try:
        alone.check_keys()
        assert alone.get_order(oid) == order
        if phones:
            assert alone.person_phone(vic) == PHONE
    finally:
        alone.close()


def test_a_wrong_key_fails_loudly_and_never_returns_sealed_text(
    sealed: Store, database_url: str
) -> None:
    _, vic, oid = _make(sealed)
    if phone_fits(sealed):
        sealed.set_person_phone(vic, PHONE)
    wrong = Store(database_url, cipher=FieldCipher([new_key()]))
    keyless = Store(database_url)
    try:
        with pytest.raises(DataKeyError, match=f"orders {oid} zones: a sealed value cannot be"):
            wrong.get_order(oid)
        with pytest.raises(DataKeyError, match="not those it was encrypted with"):
            wrong.load_all()
        with pytest.raises(DataKeyError):
            wrong.check_keys()
        with pytest.raises(DataKeyError, match="no data keys were given"):
            keyless.orders_for_person(vic)
        with pytest.raises(DataKeyError):
            keyless.check_keys()
        with pytest.raises(DataKeyError):
            wrong.reseal_fields()  # nothing is rewritten under a key that cannot read it
        if phone_fits(sealed):
            with pytest.raises(DataKeyError, match=f"people {vic} phone"):
                wrong.person_phone(vic)
            with pytest.raises(DataKeyError, match="no data keys were given"):
                keyless.person_phone(vic)
    finally:
        wrong.close()
        keyless.close()
    assert sealed.get_order(oid) is not None


def test_plaintext_from_before_encryption_is_read_then_sealed_by_a_rotation(
    database_url: str, key: str
) -> None:
    plain = Store(database_url)  # no cipher: written as before encryption existed
    plain.migrate()
    _, vic, oid = _make(plain)
    phones = 1 if phone_fits(plain) else 0
    if phones:
        plain.set_person_phone(vic, PHONE)
    assert "Sejong" in _raw(plain) and (not phones or PHONE in _raw(plain))
    with pytest.raises(Invalid, match="prefix"):
        plain.set_person_phone(vic, "enc1:not-sealed")
    order = plain.get_order(oid)
    plain.close()
    s = Store(database_url, cipher=FieldCipher([key]))
    try:
        s.check_keys()
        assert s.get_order(oid) == order  # plaintext read as is
        if phones:
            assert s.person_phone(vic) == PHONE
        counts = s.reseal_fields()
        assert counts["orders.zones"] == {"resealed": 0, "sealed": 1}
        assert counts["orders.curfews"] == {"resealed": 0, "sealed": 1}
        assert counts["people.phone"] == {"resealed": 0, "sealed": phones}
        raw = _raw(s)
        assert not [x for x in SECRETS if x in raw]
        assert s.get_order(oid) == order
        if phones:
            assert s.person_phone(vic) == PHONE
    finally:
        s.close()


def test_a_case_file_carries_the_values_opened_and_an_import_seals_them_again(
    tmp_path: Path, database_url: str
) -> None:
    source = Store(f"sqlite:///{tmp_path / 'source.sqlite'}", cipher=FieldCipher([new_key()]))
    source.migrate()
    fresh = Store(database_url, cipher=FieldCipher([new_key()]))  # another instance's keys
    fresh.migrate()
    try:
        _, vic, oid = _make(source)
        phones = phone_fits(fresh)
        if phones:
            source.set_person_phone(vic, PHONE)
        first, second = tmp_path / "first", tmp_path / "second"
        export_case(source, oid, first, now=10.0)
        exported = (first / "orders.jsonl").read_text() + (first / "people.jsonl").read_text()
        assert "Sejong-daero" in exported and "enc1:" not in exported
        assert not phones or PHONE in exported
        import_case(fresh, first, now=20.0)
        raw = _raw(fresh)
        assert not [x for x in SECRETS if x in raw]
        assert fresh.get_order(oid) == source.get_order(oid)
        if phones:
            assert fresh.person_phone(vic) == PHONE
        export_case(fresh, oid, second, now=30.0)
        assert data_checksums(first) == data_checksums(second)
    finally:
        source.close()
        fresh.close()


# -- the composition root and the command line -------------------------------------------


def test_a_first_start_makes_the_key_file_and_a_lost_one_stops_the_next(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings, create=True)
    assert store.cipher is not None
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    _make(store)
    store.close()
    (tmp_path / KEY_FILE).rename(tmp_path / "elsewhere")
    with pytest.raises(SystemExit, match="restore the data-keys file"):
        open_store(settings, create=True)
    assert not (tmp_path / KEY_FILE).exists()  # no new key made over data it cannot read
    with pytest.raises(SystemExit, match="not those it was encrypted with"):
        open_store(Settings(data_dir=tmp_path, data_keys=SecretStr(new_key())), create=True)
    (tmp_path / "elsewhere").rename(tmp_path / KEY_FILE)
    open_store(settings, create=False).close()


def _keys_in(data: Path) -> list[str]:
    return (data / KEY_FILE).read_text().split()


def test_the_rotate_command_seals_leftovers_then_rotates_and_audits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BANGPAE_DATA_KEYS", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'bangpae.sqlite'}"
    plain = Store(url)  # an instance from before encryption, never started since
    plain.migrate()
    _, vic, oid = _make(plain)
    plain.set_person_phone(vic, PHONE)
    order = plain.get_order(oid)
    plain.close()
    argv = ["keys", "rotate", "--data-dir", str(data)]

    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["keys"] == 1 and first["new_key"] is True
    assert first["fields"]["people.phone"] == {"resealed": 0, "sealed": 1}
    assert first["fields"]["orders.zones"] == {"resealed": 0, "sealed": 1}
    assert len(_keys_in(data)) == 1

    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["keys"] == 2 and second["newest"] != first["newest"]
    assert second["fields"]["orders.curfews"] == {"resealed": 1, "sealed": 0}
    newest, oldest = _keys_in(data)
    assert stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600

    (data / KEY_FILE).write_text(newest + "\n")  # the admin drops the old key
    s = Store(url, cipher=FieldCipher([newest]))
    try:
        assert s.get_order(oid) == order and s.person_phone(vic) == PHONE
        assert not [x for x in SECRETS if x in _raw(s)]
        rotations = [r for r in s.audit_records(limit=100) if r["action"] == "keys_rotate"]
        assert [(r["actor"], r["subject"]) for r in rotations] == [("cli", "data-keys")] * 2
        assert rotations[1]["fields"][0] == f"newest={second['newest']}"
        assert "orders.zones: resealed=1 sealed=0" in rotations[1]["fields"]
        assert s.audit_verify().ok
    finally:
        s.close()

    monkeypatch.setenv("BANGPAE_DATA_KEYS", f"{new_key()},{newest}")
    assert main(argv) == 1
    assert "put a new key (bangpae keys generate) first" in capsys.readouterr().err
    assert main([*argv, "--no-new-key"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["new_key"] is False and env["keys"] == 2
    assert env["fields"]["people.phone"] == {"resealed": 1, "sealed": 0}
    assert _keys_in(data) == [newest]  # keys from the environment leave the file alone

    monkeypatch.setenv("BANGPAE_DATA_KEYS", oldest)
    with pytest.raises(SystemExit, match="not those it was encrypted with"):
        main(argv)


def test_the_generate_command_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate"]) == 0
    key = capsys.readouterr().out.strip()
    cipher = FieldCipher([key])
    assert cipher.decrypt(cipher.encrypt(PHONE)) == PHONE
