"""The data directory of a real ``bangpae serve``: its user's alone, or it does not start."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Server

PASSWORD = "seoul-shield-files-2026"
T0 = time.time()


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """This process (and what it starts) would make files anyone can read and write."""
    old = os.umask(0)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every directory and file under ``root`` (itself included), by path, with its mode."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return out


def report(srv: Server, ident: str, lat: float, lon: float, t: float) -> None:
    q = {"id": ident, "lat": lat, "lon": lon, "timestamp": int(t), "accuracy": 5}
    assert httpx.get(srv.osmand, params=q).status_code == 200


def test_a_fresh_server_leaves_its_data_dir_0700_and_every_file_0600(
    server: Server, loose_umask: None
) -> None:
    r = server.cli(
        "admin", "create-user", "--username", "sup1", "--password", PASSWORD, "--role", "supervisor"
    )
    assert r.returncode == 0, r.stderr
    server.start()
    sup = server.login("sup1", PASSWORD)
    api = f"{server.api}/api/v1"
    people = [
        httpx.post(f"{api}/people", json={"kind": k, "name": k}, headers=sup).json()["id"]
        for k in ("offender", "victim")
    ]
    devices = (("ANKLE-1", "ankle_monitor"), ("PHONE-1", "phone"))
    for (ident, kind), person in zip(devices, people, strict=True):
        r = httpx.post(
            f"{api}/devices",
            json={"identifier": ident, "kind": kind, "protocol": "osmand", "person_id": person},
            headers=sup,
        )
        assert r.status_code == 201, r.text
    r = httpx.post(
        f"{api}/orders", json={"offender_id": people[0], "victim_id": people[1]}, headers=sup
    )
    assert r.status_code == 201, r.text
    for i in range(5):
        report(server, "PHONE-1", 37.5663, 126.9779, T0 + i)
        report(server, "ANKLE-1", 37.5663, 126.99 - i * 0.002, T0 + i)

    # the database is being written: its WAL and shared memory are there, beside the
    # keys, the tokens' secret, the VAPID key, the audit anchors and the server's log
    names = set(os.listdir(server.data_dir))
    expected = {"bangpae.sqlite", "bangpae.sqlite-wal", "bangpae.sqlite-shm", "secret.key"}
    assert expected | {"vapid-private.pem", "serve.log"} <= names, names
    found = modes(server.data_dir)
    assert {p: m for p, m in found.items() if m != (0o700 if p == "." else 0o600)} == {}, found


def test_serve_refuses_a_data_dir_others_can_read_and_says_how_to_fix_it(server: Server) -> None:
    server.data_dir.chmod(0o755)
    with pytest.raises(RuntimeError) as refused:
        server.start()
    assert server.proc is not None and server.proc.returncode == 1
    message = str(refused.value)
    assert f"directory {server.data_dir} is mode 0755, must be 0700" in message, message
    assert f"chmod 700 {server.data_dir}" in message, message
    assert not (server.data_dir / "bangpae.sqlite").exists(), "refused before touching it"


def test_serve_refuses_a_database_others_can_read(server: Server) -> None:
    r = server.cli(
        "admin", "create-user", "--username", "sup1", "--password", PASSWORD, "--role", "supervisor"
    )
    assert r.returncode == 0, r.stderr
    db = server.data_dir / "bangpae.sqlite"
    db.chmod(0o644)  # as an older version, or a restore from a backup, left it
    with pytest.raises(RuntimeError) as refused:
        server.start()
    message = str(refused.value)
    assert f"file {db} is mode 0644, must be 0600" in message, message
    assert f"chmod 600 {db}" in message, message
