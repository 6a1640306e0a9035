"""A real ``bangpae serve`` process on free loopback ports, with a fresh data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private(path: str, flags: int) -> int:
    """An opener making files 0600, as ``bangpae serve`` wants them in its data dir."""
    return os.open(path, flags, 0o600)


_HASHES: dict[str, str] = {}


def _hash_of(password: str) -> str:
    """The argon2id hash of a test password, made once per session (a real hash: the
    server checks it as any other)."""
    if password not in _HASHES:
        from bangpae.services.auth import hash_password

        _HASHES[password] = hash_password(password)
    return _HASHES[password]


@dataclass
class Server:
    data_dir: Path
    http_port: int
    osmand_port: int
    proc: subprocess.Popen[bytes] | None = None
    h02_port: int | None = None
    gt06_port: int | None = None
    tcp_workers: int = 0  # processes serving the TCP trackers (0: the server itself)

    @staticmethod
    def free() -> int:
        return free_port()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def osmand(self) -> str:
        return f"http://127.0.0.1:{self.osmand_port}/"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BANGPAE_DATA_DIR": str(self.data_dir),
            "BANGPAE_LOG_LEVEL": "WARNING",
            "BANGPAE_TILE_URL": "",  # no base map: tests stay off the internet
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        if args[:2] == ("admin", "create-user") and not (self.data_dir / "bangpae.sqlite").exists():
            args = (*args, "--init")  # the first login makes the installation, as it must say
        return subprocess.run(
            [sys.executable, "-m", "bangpae.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def add_user(self, name: str, role: str, password: str, person: int | None = None) -> int:
        """A login, made in this process the way ``bangpae admin create-user`` makes it
        (the command itself is tested in tests/integration/test_cli_users.py and by the
        servers of test_tcp.py): no interpreter to start, the password hashed once."""
        from bangpae.app import open_store
        from bangpae.cli import add_login
        from bangpae.config import Settings

        settings = Settings(data_dir=self.data_dir)
        first = not (self.data_dir / "bangpae.sqlite").exists()
        store = open_store(settings, create=first)
        try:
            return add_login(store, name, _hash_of(password), role, person)
        finally:
            store.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bangpae.cli",
                "serve",
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--osmand",
                f"127.0.0.1:{self.osmand_port}",
                "--gt06",
                f"127.0.0.1:{self.gt06_port}" if self.gt06_port else "off",
                "--h02",
                f"127.0.0.1:{self.h02_port}" if self.h02_port else "off",
                "--tcp-workers",
                str(self.tcp_workers),
            ],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            # in the data dir, so private like everything there: serve refuses it otherwise
            stderr=open(self.data_dir / "serve.log", "ab", opener=private),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.data_dir / "serve.log").read_text())
            try:
                if httpx.get(f"{self.api}/healthz", timeout=1).status_code == 200:
                    httpx.get(self.osmand, timeout=1)
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def login(self, username: str, password: str) -> dict[str, str]:
        r = httpx.post(
            f"{self.api}/api/v1/auth/login", json={"username": username, "password": password}
        )
        r.raise_for_status()
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", free_port(), free_port())
    srv.data_dir.mkdir(mode=0o700)
    yield srv
    # a finished test's server is killed: its graceful stop (up to 3 s for open links) has
    # its own test, test_serve.py's test_sigterm_stops_serve_cleanly
    srv.kill()
