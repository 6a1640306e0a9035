"""Half-open connections against a real server: each listener holds no more than its
budget, drops them within its deadline, and meanwhile serves everyone else.

The attacker connects from other loopback addresses (127.0.0.2 and up) than the
honest clients (127.0.0.1), as the attack would come from elsewhere than the devices.
"""

from __future__ import annotations

import resource
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Server
from .test_tcp import LOGIN_ACK, TIMER_15, _gt06_frame, _recv_exact, _staff, _tracker

PER_ADDRESS = 6
TOTAL = 15
HEADER_TIMEOUT_S = 2
LOGIN_TIMEOUT_S = 2
SAFETY_S = 10  # a generous bound on "within the deadline": the machine is shared
HALF_OPEN = b"GET / HTTP/1.1\r\n"  # a request line, and never the rest of the head


@pytest.fixture
def budgets(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The server with small budgets and deadlines, so an attack fits in a test."""
    for listener in ("api", "osmand", "gt06", "h02"):
        monkeypatch.setenv(f"BANGPAE_{listener.upper()}_MAX_PER_ADDRESS", str(PER_ADDRESS))
        monkeypatch.setenv(f"BANGPAE_{listener.upper()}_MAX_CONNECTIONS", str(TOTAL))
    monkeypatch.setenv("BANGPAE_HTTP_HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))
    monkeypatch.setenv("BANGPAE_TRACKER_LOGIN_TIMEOUT_S", str(LOGIN_TIMEOUT_S))
    return server


def _metrics(srv: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{srv.api}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def _until(what: str, condition: object, within_s: float = SAFETY_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.1)


def _attack(port: int, n: int, source: str, payload: bytes = b"") -> list[socket.socket]:
    """``n`` connections from ``source`` that send ``payload`` and then nothing."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        if payload:
            s.sendall(payload)
        out.append(s)
    return out


def _closed(s: socket.socket) -> bool:
    """Whether the server closed this connection (without waiting)."""
    if s.fileno() < 0:
        return True
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        if s.recv(4096) == b"":
            s.close()
            return True
    except ConnectionError:
        s.close()
        return True
    return False


def _still_open(socks: list[socket.socket]) -> int:
    return sum(not _closed(s) for s in socks)


@pytest.fixture
def attackers() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def _osmand_fix(srv: Server, device: str) -> int:
    r = httpx.get(
        srv.osmand,
        params={
            "id": device,
            "lat": "37.5663",
            "lon": "126.9779",
            "timestamp": str(int(time.time())),
        },
        timeout=10,
    )
    return r.status_code


def test_half_open_http_connections_are_capped_per_address_and_dropped_after_the_header_timeout(
    budgets: Server, attackers: list[socket.socket]
) -> None:
    server = budgets
    staff = _staff(server)
    _tracker(server, staff, "ANKLE-1", "osmand")
    api = [*_attack(server.http_port, 4 * PER_ADDRESS, "127.0.0.2", HALF_OPEN)]
    osm = [*_attack(server.osmand_port, 4 * PER_ADDRESS, "127.0.0.2", HALF_OPEN)]
    attackers += api + osm

    def refused(listener: str) -> float:
        m = _metrics(server)
        return _value(
            m, "bangpae_connections_refused_total", listener=listener, reason="per_address"
        )

    # beyond the cap each is closed at once, and counted
    _until("api refusals counted", lambda: refused("api") >= 3 * PER_ADDRESS)
    _until("osmand refusals counted", lambda: refused("osmand") >= 3 * PER_ADDRESS)
    assert _still_open(api) <= PER_ADDRESS and _still_open(osm) <= PER_ADDRESS
    m = _metrics(server)
    # the server's own count: the attacker's connections, and this request for /metrics
    assert _value(m, "bangpae_connections_open", listener="api") <= PER_ADDRESS + 1
    assert _value(m, "bangpae_connections_open", listener="osmand") <= PER_ADDRESS

    # meanwhile an operator and a device are served
    assert httpx.get(f"{server.api}/api/v1/incidents", headers=staff, timeout=10).status_code == 200
    assert _osmand_fix(server, "ANKLE-1") == 200

    # the half-open ones are dropped within the header timeout, and counted
    _until("half-open connections dropped", lambda: _still_open(api + osm) == 0)
    m = _metrics(server)
    assert _value(m, "bangpae_connections_timed_out_total", listener="api", reason="header") >= 1
    assert _value(m, "bangpae_connections_timed_out_total", listener="osmand", reason="header") >= 1
    assert _value(m, "bangpae_connections_open", listener="osmand") == 0
    health = httpx.get(f"{server.api}/healthz", timeout=10).json()
    assert 0 < health["open_files"]["open"] < health["open_files"]["limit"]
    assert health["connections"]["osmand"]["refused"]["per_address"] >= 3 * PER_ADDRESS


def test_a_flood_from_many_addresses_fills_only_the_osmand_budget(
    budgets: Server, attackers: list[socket.socket]
) -> None:
    server = budgets
    server.gt06_port = server.free()
    staff = _staff(server)
    _tracker(server, staff, "864717003283581", "gt06")
    _tracker(server, staff, "ANKLE-1", "osmand")
    for i in range(5):  # 5 addresses at their per-address cap: twice the listener's budget
        attackers += _attack(server.osmand_port, PER_ADDRESS, f"127.0.0.{2 + i}", HALF_OPEN)

    def refused() -> float:
        m = _metrics(server)
        return _value(m, "bangpae_connections_refused_total", listener="osmand", reason="total")

    _until("osmand refusals counted", lambda: refused() >= 5 * PER_ADDRESS - TOTAL)
    assert _still_open(attackers) <= TOTAL
    assert _value(_metrics(server), "bangpae_connections_open", listener="osmand") <= TOTAL

    # the OsmAnd listener is full; the API and the GT06 listener have budgets of their own
    assert httpx.get(f"{server.api}/api/v1/incidents", headers=staff, timeout=10).status_code == 200
    assert server.gt06_port is not None
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(bytes.fromhex("78780d01086471700328358100093f040d0a"))  # login
        assert _recv_exact(s, len(LOGIN_ACK)) == LOGIN_ACK
        assert _recv_exact(s, len(TIMER_15)) == TIMER_15

    # once the half-open ones are dropped, devices report over OsmAnd again
    _until("half-open connections dropped", lambda: _still_open(attackers) == 0)
    assert _osmand_fix(server, "ANKLE-1") == 200


@pytest.mark.parametrize("workers", [0, 2], ids=["main-process", "intake-workers"])
def test_silent_tracker_connections_are_capped_per_address_and_dropped_before_login(
    budgets: Server, attackers: list[socket.socket], workers: int
) -> None:
    server = budgets
    server.gt06_port = server.free()
    server.tcp_workers = workers
    staff = _staff(server)
    _tracker(server, staff, "864717003283581", "gt06")
    assert server.gt06_port is not None
    attackers += _attack(server.gt06_port, 4 * PER_ADDRESS, "127.0.0.2")

    def refused() -> float:  # workers report their counts within a second
        m = _metrics(server)
        return _value(m, "bangpae_connections_refused_total", listener="gt06", reason="per_address")

    _until("gt06 refusals counted", lambda: refused() >= 3 * PER_ADDRESS)
    assert _still_open(attackers) <= PER_ADDRESS
    assert _value(_metrics(server), "bangpae_connections_open", listener="gt06") <= PER_ADDRESS

    # a tracker logs in meanwhile, and stays connected past the deadline for logging in
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(bytes.fromhex("78780d01086471700328358100093f040d0a"))
        assert _recv_exact(s, len(LOGIN_ACK)) == LOGIN_ACK
        assert _recv_exact(s, len(TIMER_15)) == TIMER_15
        _until("silent connections dropped", lambda: _still_open(attackers) == 0)
        s.sendall(_gt06_frame(0x13, bytes([0x44, 0x04, 0x03, 0x00, 0x02]), 5))  # status
        assert _recv_exact(s, 10)[:6] == bytes.fromhex("787805130005")
    _until(
        "login timeouts counted",
        lambda: (
            _value(
                _metrics(server),
                "bangpae_connections_timed_out_total",
                listener="gt06",
                reason="login",
            )
            >= 1
        ),
    )


def test_the_open_files_limit_is_raised_to_the_hard_limit_at_start(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 512:
        pytest.skip(f"no finite hard limit above 512 to raise to ({hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # the server inherits it
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    health = httpx.get(f"{server.api}/healthz", timeout=10).json()
    assert health["open_files"]["limit"] == hard
    m = _metrics(server)
    assert _value(m, "bangpae_open_files_limit") == hard
    assert 0 < _value(m, "bangpae_open_files") < hard
