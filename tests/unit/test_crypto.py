"""Field encryption: sealed values, key rotation, wrong keys refused, the key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bangpae.adapters.crypto import (
    KEY_FILE,
    PREFIX,
    RECORD_SEALED,
    DataKeyError,
    FieldCipher,
    add_key,
    fingerprint,
    is_sealed,
    new_key,
    open_data_keys,
    read_key_file,
)

PHONE = "+821012345678"


def test_a_sealed_value_carries_the_prefix_and_opens_to_the_plaintext() -> None:
    cipher = FieldCipher([new_key()])
    sealed = cipher.encrypt(PHONE)
    assert sealed.startswith(PREFIX) and is_sealed(sealed) and PHONE not in sealed
    assert cipher.decrypt(sealed) == PHONE
    assert cipher.encrypt(PHONE) != sealed  # a fresh IV each time: equal numbers look unequal


def test_a_value_sealed_under_an_older_key_is_read_and_resealed_under_the_newest() -> None:
    old, new = new_key(), new_key()
    sealed = FieldCipher([old]).encrypt(PHONE)
    both = FieldCipher([new, old])
    assert both.decrypt(sealed) == PHONE
    resealed = both.reseal(sealed)
    assert FieldCipher([new]).decrypt(resealed) == PHONE
    with pytest.raises(DataKeyError):
        FieldCipher([old]).decrypt(resealed)


def test_resealing_plaintext_seals_it() -> None:
    cipher = FieldCipher([new_key()])
    assert cipher.decrypt(cipher.reseal(PHONE)) == PHONE


def test_a_wrong_key_is_refused_with_a_clear_error_never_garbage() -> None:
    sealed = FieldCipher([new_key()]).encrypt(PHONE)
    with pytest.raises(DataKeyError, match="cannot be opened with the 2 data key"):
        FieldCipher([new_key(), new_key()]).decrypt(sealed)
    with pytest.raises(DataKeyError, match="not those it was encrypted with"):
        FieldCipher([new_key()]).reseal(sealed)


def test_an_altered_value_is_refused() -> None:
    cipher = FieldCipher([new_key()])
    sealed = cipher.encrypt(PHONE)
    k = len(PREFIX) + 30
    altered = sealed[:k] + ("A" if sealed[k] != "A" else "B") + sealed[k + 1 :]
    with pytest.raises(DataKeyError, match="altered"):
        cipher.decrypt(altered)


def test_plaintext_is_not_taken_for_a_sealed_value() -> None:
    with pytest.raises(DataKeyError, match="not a sealed value"):
        FieldCipher([new_key()]).decrypt(PHONE)
    assert not is_sealed(PHONE) and not is_sealed(["zone"]) and not is_sealed(None)


def test_a_malformed_key_is_named_by_its_place_and_never_echoed() -> None:
    bad = "not-a-key-but-close-to-a-secret"
    with pytest.raises(DataKeyError, match="data key 2 of BANGPAE_DATA_KEYS") as caught:
        FieldCipher([new_key(), bad])
    assert bad not in str(caught.value)
    with pytest.raises(DataKeyError, match="holds no data key"):
        FieldCipher([])


def test_the_key_file_is_made_once_on_first_start_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    assert open_data_keys(tmp_path, None, create=False) is None
    first = open_data_keys(tmp_path, None, create=True)
    assert first is not None and len(first.keys) == 1
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = open_data_keys(tmp_path, None, create=True)
    assert again is not None and again.keys == first.keys
    assert again.decrypt(first.encrypt(PHONE)) == PHONE


def test_keys_from_the_environment_come_before_the_file(tmp_path: Path) -> None:
    open_data_keys(tmp_path, None, create=True)
    a, b = new_key(), new_key()
    cipher = open_data_keys(tmp_path, f" {a} , {b} ,", create=True)
    assert cipher is not None and cipher.keys == (a, b) and cipher.path is None
    assert open_data_keys(tmp_path / "none", "  ", create=False) is None  # blank: unset


def test_a_rotation_by_another_process_reaches_a_running_one(tmp_path: Path) -> None:
    running = open_data_keys(tmp_path, None, create=True)
    assert running is not None
    before = running.encrypt(PHONE)
    rotated = add_key(running)  # as the command line does, in its own process
    assert rotated.keys[1:] == running.keys and len(rotated.keys) == 2
    assert read_key_file(tmp_path / KEY_FILE) == list(rotated.keys)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    # the running process opens values sealed under the new key, and seals with it
    assert running.decrypt(rotated.encrypt(PHONE)) == PHONE
    after = running.encrypt(PHONE)
    assert FieldCipher([rotated.keys[0]]).decrypt(after) == PHONE
    assert rotated.decrypt(before) == PHONE


def test_a_new_key_cannot_be_added_to_keys_from_the_environment() -> None:
    with pytest.raises(DataKeyError, match="put a new key"):
        add_key(FieldCipher([new_key()]))


def test_a_fingerprint_names_a_key_without_revealing_it() -> None:
    key = new_key()
    assert len(fingerprint(key)) == 12 and fingerprint(key) not in key
    assert fingerprint(key) == fingerprint(key) != fingerprint(new_key())


def test_a_key_file_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / KEY_FILE
    path.write_text(new_key() + "\n")
    os.chmod(path, 0o644)
    FieldCipher.from_file(path)
    assert "chmod 600" in caplog.text


# -- records: positions sealed with AES-GCM under a derived subkey ------------------------

ROW = b"row 7, device 3, at t"


def test_a_record_opens_only_with_its_scope_and_its_row() -> None:
    cipher = FieldCipher([new_key()])
    (record,) = cipher.seal_records([3], [ROW], [b"37.5,127.0"])
    assert b"37.5" not in record and record[0] == RECORD_SEALED
    assert cipher.open_record(3, ROW, record) == b"37.5,127.0"
    with pytest.raises(DataKeyError, match="does not authenticate"):
        cipher.open_record(4, ROW, record)  # another device's key
    with pytest.raises(DataKeyError, match="does not authenticate"):
        cipher.open_record(3, b"row 8, device 3, at t", record)  # another row
    altered = record[:-1] + bytes([record[-1] ^ 1])
    with pytest.raises(DataKeyError, match="does not authenticate"):
        cipher.open_record(3, ROW, altered)


def test_equal_positions_seal_to_unequal_records() -> None:
    cipher = FieldCipher([new_key()])
    a, b = cipher.seal_records([3, 3], [ROW, ROW], [b"same", b"same"])
    assert a != b and cipher.open_record(3, ROW, a) == cipher.open_record(3, ROW, b)


def test_a_record_names_its_key_so_a_rotation_reads_old_ones_and_skips_current_ones() -> None:
    old, new = new_key(), new_key()
    (record,) = FieldCipher([old]).seal_records([1], [ROW], [b"x"])
    both = FieldCipher([new, old])
    assert both.open_record(1, ROW, record) == b"x" and not both.record_is_current(record)
    (fresh,) = both.seal_records([1], [ROW], [b"x"])
    assert both.record_is_current(fresh) and FieldCipher([new]).open_record(1, ROW, fresh) == b"x"
    with pytest.raises(DataKeyError, match="not among the 1 given"):
        FieldCipher([new]).open_record(1, ROW, record)


def test_a_record_sealed_after_another_process_rotated_the_key_file_opens(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    reader = open_data_keys(tmp_path, None, create=True)
    assert reader is not None
    writer = add_key(FieldCipher.from_file(path))
    (record,) = writer.seal_records([1], [ROW], [b"x"])
    assert reader.open_record(1, ROW, record) == b"x"
