"""What bangpae writes is its user's alone, even in a process whose umask says otherwise."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bangpae import app
from bangpae.adapters.anchors import anchor_head
from bangpae.adapters.casefile import export_case
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.datadir import loose_modes, refusal
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order
from tests.scenario import T0


@pytest.fixture
def umask() -> Iterator[None]:
    """Whatever a test sets the umask to, it is put back."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return out


async def test_an_embedding_process_with_a_loose_umask_still_gets_0700_and_0600(
    tmp_path: Path, umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process that embeds the service with umask 000 and, say, resets it after build():
    # only the modes bangpae gives its files explicitly stand between them and everyone.
    os.umask(0)
    monkeypatch.setattr(app, "private_umask", lambda: None)
    data = tmp_path / "deep" / "data"
    ctx = app.build(Settings(data_dir=data, tick_s=60), clock=ManualClock(T0))
    try:
        s = ctx.store
        off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
        s.set_person_phone(vic, "+821012345678")  # sealed with the data key made just now
        ankle = s.add_device("ANKLE", "ankle_monitor", "osmand", off)
        order = s.add_order(Order(0, off, vic))
        await ctx.start()
        await ctx.ingest.submit([Fix(ankle, T0, 37.5663, 126.9779, 5.0)])
        export_case(s, order, data / f"order-{order}", now=T0)
        anchor_head(s, ctx.settings.resolved_anchor_path(), T0)
        names = set(os.listdir(data))
        for name in ("bangpae.sqlite-wal", "bangpae.sqlite-shm", "audit-anchors.log"):
            assert name in names, names
        found = modes(data)
    finally:
        await ctx.stop()
    wanted = {p: 0o700 if (data / p).is_dir() else 0o600 for p in found}
    assert found == wanted
    assert loose_modes(data) == []


async def test_build_leaves_the_process_making_private_files(tmp_path: Path, umask: None) -> None:
    os.umask(0o022)
    ctx = app.build(Settings(data_dir=tmp_path / "data", tick_s=60), clock=ManualClock(T0))
    ctx.store.close()
    current = os.umask(0o077)
    os.umask(current)
    assert current == 0o077
    made = tmp_path / "data" / "made-later"
    await asyncio.to_thread(made.write_text, "anything")
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


def test_the_refusal_names_each_loose_path_its_mode_and_the_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True, mode=0o700)
    (data / "bangpae.sqlite").write_text("")
    (data / "sub" / "x").write_text("")
    data.chmod(0o750)
    (data / "bangpae.sqlite").chmod(0o640)
    (data / "sub" / "x").chmod(0o604)
    (data / "secret.key").write_text("")
    (data / "secret.key").chmod(0o600)
    loose = loose_modes(data)
    assert [(p.relative_to(tmp_path), m) for p, m in loose] == [
        (Path("data"), 0o750),
        (Path("data/bangpae.sqlite"), 0o640),
        (Path("data/sub/x"), 0o604),
    ]
    message = refusal(data, loose)
    assert f"directory {data} is mode 0750, must be 0700" in message
    assert f"chmod 700 {data}\n" in message
    assert f"chmod 600 {data / 'bangpae.sqlite'} {data / 'sub' / 'x'}" in message
