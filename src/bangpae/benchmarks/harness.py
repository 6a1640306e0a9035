"""What the flood and soak benchmarks measure a server with, over loopback as a black box.

A real ``bangpae serve`` on a fresh data dir, seeded like W2 but with a key on every
device; the victim reading her status about every 100 ms; and what the server's
processes use (memory, file descriptors). The good devices are in
:mod:`bangpae.benchmarks.fleet`, the attacks in :mod:`bangpae.benchmarks.attack`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bangpae.benchmarks.w1 import generate
from bangpae.benchmarks.w2 import _free_port, _seed

GOOD_KEY = "good-device-key-4c1d9e-7Qm2pX8z"  # one key (and hash) for every good device
PASSWORD = "flood-bench-password"
log = logging.getLogger("bangpae.benchmarks")
READ_EVERY_S = 0.1  # the victim's status read
TIMEOUT_S = 30.0  # a good device or the victim gives up on one request after this


def percentiles(values: Any, *qs: float) -> list[float | None]:
    """The given percentiles of ``values`` in ms, rounded (None when there are none)."""
    a = np.asarray(values, dtype=float)
    if not len(a):
        return [None for _ in qs]
    return [round(float(np.percentile(a, q)), 1) for q in qs]


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 request on a keep-alive connection: status, body, whether it closes.

    A small client on raw sockets, as in W2: a general HTTP client spends more CPU per
    request than the server, and the load shares the machine with it.
    """
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, close = 0, False, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if not chunked:
        return status, await reader.readexactly(length), close
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")
    return status, body, close


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _die_with_parent() -> None:
    """In the server's process before it runs: end it when the benchmark ends, even killed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def process_use(pid: int) -> dict[str, float]:
    """Resident memory (MB), open file descriptors and threads of a process and its
    children (the intake workers, when it has them)."""
    rss_kb, fds, threads = 0, 0, 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss_kb += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:  # exited meanwhile
            pass
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": fds, "threads": threads}


def fd_limit(pid: int) -> int | None:
    """The soft limit on open files of a running process."""
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return None


class Server:
    """A ``bangpae serve`` subprocess on loopback with a fresh data dir, seeded with
    ``pairs`` orders whose devices all have keys, and one victim who signs in."""

    def __init__(self, pairs: int, tcp_workers: int = 0, prefix: str = "bangpae-flood-") -> None:
        self.pairs = pairs
        self.tcp_workers = tcp_workers
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.data = Path(self._tmp.name)
        self.db_url = f"sqlite:///{self.data / 'bangpae.sqlite'}"
        self.api_port = self.osmand_port = self.gt06_port = self.h02_port = 0  # from start()
        self.walk = generate(pairs)
        self.proc: subprocess.Popen[bytes] | None = None
        self.victim_pair = 0
        self.started_at = 0.0
        self.secret = secrets.token_urlsafe(32)  # the server's secret: device keys hang on it

    @property
    def api(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def identifier(self, device_id: int) -> str:
        """A seeded device's identifier (as W2 seeds them)."""
        return f"{device_id:015d}"

    def seed(self) -> None:
        """People, devices and orders (W2's seed), then one key for every device."""
        from bangpae.adapters.store import Store
        from bangpae.domain.geodesy import fast_distances_m
        from bangpae.services.auth import hash_password
        from bangpae.services.devicekeys import key_hash, pepper_from

        lat, lon = self.walk.lat[0], self.walk.lon[0]
        # her offender starts nearest to her of all: his every fix changes her screen
        d0 = fast_distances_m(lat[0::2], lon[0::2], lat[1::2], lon[1::2])
        self.victim_pair = int(np.argmin(d0))
        _seed(self.db_url, self.pairs, [self.victim_pair], hash_password(PASSWORD))
        # device keys are a keyed hash under the server's secret (docs/robustness.md)
        good = key_hash(pepper_from(self.secret.encode()), GOOD_KEY)
        st = Store(self.db_url)
        with st.engine.begin() as c:
            c.exec_driver_sql("UPDATE devices SET secret_hash = ?", (good,))
        st.close()

    def start(self) -> None:
        """Start the server (with this process's limits) and wait until it answers.

        Its ports are chosen just before, free at that moment; another process may take
        one meanwhile (the machine is shared), so a server that cannot bind is started
        again on other ports.
        """
        for _ in range(3):
            if self._start_once():
                return
            log.info("a port was taken meanwhile: starting the server on others")
        raise RuntimeError("server could not bind its ports:\n" + self.log_tail())

    def _start_once(self) -> bool:
        self.api_port, self.osmand_port = _free_port(), _free_port()
        self.gt06_port, self.h02_port = _free_port(), _free_port()
        env = {
            **os.environ,
            "BANGPAE_DATA_DIR": str(self.data),
            "BANGPAE_LOG_LEVEL": "WARNING",
            "BANGPAE_TILE_URL": "",
            "BANGPAE_SECRET_KEY": self.secret,
        }
        env.pop("BANGPAE_ALLOW_KEYLESS_DEVICES", None)  # every key is checked
        listen = {
            "--http": self.api_port,
            "--osmand": self.osmand_port,
            "--gt06": self.gt06_port,
            "--h02": self.h02_port,
        }
        argv = [sys.executable, "-m", "bangpae.cli", "serve"]
        for flag, port in listen.items():
            argv += [flag, f"127.0.0.1:{port}"]
        argv += ["--tcp-workers", str(self.tcp_workers)]
        logfile = self.data / "serve.log"
        logged = logfile.stat().st_size if logfile.exists() else 0
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(logfile, "ab"),
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(logfile, "rb") as fh:
                    fh.seek(logged)
                    why = fh.read().decode(errors="replace")
                if "address already in use" in why:
                    return False
                raise RuntimeError("server exited:\n" + why[-3000:])
            try:
                r = httpx.get(f"{self.api}/healthz", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            # answered by this server, not by another that took the port meanwhile (its
            # orders, where /healthz still tells them)
            ours = r.status_code == 200 and r.json().get("orders", self.pairs) == self.pairs
            if ours and self.proc.poll() is None:
                self.started_at = time.monotonic()
                log.info("server up (pid %d) on api :%d", self.proc.pid, self.api_port)
                return True
            time.sleep(0.1)
        raise RuntimeError("server did not start within 60 s")

    def login(self) -> dict[str, str]:
        """The victim's sign-in: access and refresh tokens."""
        r = httpx.post(
            f"{self.api}/api/v1/auth/login",
            json={"username": f"victim{self.victim_pair}", "password": PASSWORD},
            timeout=30,
        )
        r.raise_for_status()
        return dict(r.json())

    def use(self) -> dict[str, float]:
        """What the server's processes use now."""
        assert self.proc is not None
        return process_use(self.proc.pid)

    def stop(self) -> dict[str, Any]:
        """Stop the server with SIGTERM (as an operator would); its exit code and how long
        stopping took (killed after 60 s)."""
        assert self.proc is not None
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                killed = True
        return {
            "server_exit_code": self.proc.returncode,
            "server_stop_s": round(time.monotonic() - t0, 2),
            "server_killed": killed,
        }

    def stored(self) -> set[tuple[int, int]]:
        """Every stored fix as (device id, fix time in whole seconds), read with the store
        after the server stopped: by time, not position, which may be sealed at rest."""
        from bangpae.adapters.store import Store

        st = Store(self.db_url)
        with st.engine.connect() as c:
            rows = c.exec_driver_sql("SELECT device_id, fix_time FROM fixes").all()
        st.close()
        return {(int(d), round(t)) for d, t in rows}

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log."""
        try:
            return "\n".join((self.data / "serve.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Stop the server if it runs, and remove the data dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._tmp.cleanup()


def close(conn: Any) -> None:
    """Close a stream connection (a reader and writer pair), if there is one."""
    if conn is not None:
        conn[1].close()


class Samples:
    """Timed samples appended in time order: (monotonic time, value, tag)."""

    def __init__(self) -> None:
        self.t = array("d")
        self.v = array("d")
        self.tag = array("b")

    def add(self, t: float, value: float, tag: int = 0) -> None:
        """One sample."""
        self.t.append(t)
        self.v.append(value)
        self.tag.append(tag)

    def since(self, t0: float, t1: float = float("inf"), tag: int | None = None) -> Any:
        """The values taken in [t0, t1), of one tag or all."""
        t = np.frombuffer(self.t, dtype=float) if len(self.t) else np.empty(0)
        v = np.frombuffer(self.v, dtype=float) if len(self.v) else np.empty(0)
        keep = (t >= t0) & (t < t1)
        if tag is not None and len(self.tag):
            keep &= np.frombuffer(self.tag, dtype=np.int8) == tag
        return v[keep].copy()


class Victim:
    """The victim's app: her status read about every 100 ms over one keep-alive connection,
    a new access token from her refresh token whenever one expires."""

    def __init__(self, server: Server, tokens: dict[str, str]) -> None:
        self.server, self.tokens = server, tokens
        self.reads = Samples()  # latency in ms of each read answered 200
        self.failures = Samples()
        self.errors = Counter[str]()
        self.refreshes = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop reading (a read under way is finished first)."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _refresh(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            r = await client.post(
                f"{self.server.api}/api/v1/auth/refresh",
                json={"refresh_token": self.tokens["refresh_token"]},
            )
            r.raise_for_status()
            self.tokens = dict(r.json())
            self.refreshes += 1

    async def _run(self) -> None:
        conn: Any = None
        nxt = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < nxt:
                try:
                    await asyncio.wait_for(self._stop.wait(), nxt - now)
                    break
                except TimeoutError:
                    pass
            nxt = max(nxt + READ_EVERY_S, time.monotonic())
            request = (
                "GET /api/v1/victim/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.tokens['access_token']}\r\n\r\n"
            ).encode()
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", self.server.api_port)
                status, _, closing = await asyncio.wait_for(
                    exchange(conn[0], conn[1], request), TIMEOUT_S
                )
                if closing:
                    close(conn)
                    conn = None
                if status == 401:
                    await self._refresh()
                    continue
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.errors[type(exc).__name__] += 1
                self.failures.add(time.monotonic(), 1000.0 * (time.monotonic() - t0))
                close(conn)
                conn = None
                continue
            except httpx.HTTPError as exc:
                self.errors[f"refresh:{type(exc).__name__}"] += 1
                self.failures.add(time.monotonic(), 1000.0 * (time.monotonic() - t0))
                continue
            done = time.monotonic()
            if status == 200:
                self.reads.add(done, 1000.0 * (done - t0))
            else:
                self.errors[f"http_{status}"] += 1
                self.failures.add(done, 1000.0 * (done - t0))
        close(conn)

    def window(self, t0: float, t1: float = float("inf")) -> dict[str, Any]:
        """Her reads in [t0, t1): how many, latency, failures."""
        ms = self.reads.since(t0, t1)
        p50, p99, top = percentiles(ms, 50, 99, 100)
        return {
            "victim_reads": len(ms),
            "victim_p50_ms": p50,
            "victim_p99_ms": p99,
            "victim_max_ms": top,
            "victim_errors": len(self.failures.since(t0, t1)),
        }


class UseSampler:
    """The server's memory and descriptors, sampled every ``every_s``."""

    def __init__(self, server: Server, every_s: float = 1.0) -> None:
        self.server, self.every_s = server, every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.server.use()))
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def window(self, t0: float, t1: float = float("inf")) -> dict[str, Any]:
        """Memory and descriptors at the start, their maximum and at the end of [t0, t1)."""
        inside = [u for t, u in self.samples if t0 <= t < t1]
        if not inside:
            inside = [self.samples[-1][1]] if self.samples else [self.server.use()]
        out: dict[str, Any] = {}
        for key in ("rss_mb", "fds", "threads"):
            values = [u[key] for u in inside]
            out |= {f"{key}_start": values[0], f"{key}_max": max(values), f"{key}_end": values[-1]}
        return out


def warm_up_s(devices: int) -> float:
    """How long the good devices may take to get their first fix each acknowledged (the
    server checks each key once, ~0.1-0.4 s of argon2)."""
    return 30.0 + 0.5 * devices
