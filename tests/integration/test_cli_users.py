"""``bangpae admin create-user`` never makes a database by accident, and the demo's logins."""

from __future__ import annotations

from pathlib import Path

import pytest

from bangpae.app import build
from bangpae.cli import main as cli_main
from bangpae.config import Settings
from bangpae.demo import seed

PW = "a-long-enough-password"


def create(data_dir: Path, *extra: str, person: int | None = None) -> int:
    args = ["admin", "create-user", "--data-dir", str(data_dir), "--username", "kim"]
    args += ["--password", PW, "--role", "victim" if person else "operator", *extra]
    if person is not None:
        args += ["--person-id", str(person)]
    return cli_main(args)


def test_create_user_refuses_to_make_a_fresh_database_unless_told_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert create(data) == 2
    err = capsys.readouterr().err
    assert "no database" in err and "--init" in err
    assert not (data / "bangpae.sqlite").exists()
    assert create(data, "--init") == 0
    assert (data / "bangpae.sqlite").exists()


def test_create_user_against_the_demos_parent_dir_says_where_the_demo_data_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = tmp_path / "demo"
    ctx = build(Settings(data_dir=demo))
    seeded = seed(ctx)
    ctx.store.close()
    victim = seeded["people"]["vic1"]
    assert create(tmp_path, person=victim) == 2
    err = capsys.readouterr().err
    assert str(demo) in err and "does not exist" not in err
    assert not (tmp_path / "bangpae.sqlite").exists()  # nothing was made on the way
    assert create(demo, person=victim) == 0


def test_the_demo_gives_a_field_officer_login_bound_to_an_officer(tmp_path: Path) -> None:
    ctx = build(Settings(data_dir=tmp_path))
    seeded = seed(ctx)
    role, password = seeded["logins"]["officer-kim"]
    assert role == "field_officer" and len(password) >= 12
    user = ctx.store.get_user_by_name("officer-kim")
    person = ctx.store.get_person(user.person_id)
    assert person is not None and person.kind == "officer"
    ctx.store.close()


def test_the_control_centre_clears_a_forgotten_pin_from_the_command_line_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = build(Settings(data_dir=tmp_path))
    seeded = seed(ctx)
    victim = ctx.store.get_user_by_name("victim-a")
    ctx.store.set_pins(victim.id, "$argon2id$app", "$argon2id$duress")
    ctx.store.close()
    base = ["admin", "clear-pins", "--data-dir", str(tmp_path)]
    assert cli_main([*base, "--username", "officer-kim", "--reason", "x"]) == 1
    assert "no protected person" in capsys.readouterr().err
    assert cli_main([*base, "--username", "victim-a", "--reason", " "]) == 2
    assert cli_main([*base, "--username", "victim-a", "--reason", "called back, verified"]) == 0
    ctx = build(Settings(data_dir=tmp_path))
    assert ctx.store.pins(victim.id) == (None, None)
    [rec] = [a for a in ctx.store.audit_records(limit=1000) if a["action"] == "clear_pins"]
    assert rec["subject"] == f"user:{victim.id}" and rec["actor"] == "cli"
    assert seeded["logins"]["victim-a"][0] == "victim"
    ctx.store.close()
