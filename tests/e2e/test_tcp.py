"""Trackers over real TCP sockets against a real server: acknowledged after storing."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import httpx
import pytest

from bangpae.protocols.gt06 import interval_command

from .conftest import Server
from .test_serve import PASSWORD

LOGIN_ACK = bytes.fromhex("78780501000955940d0a")
TIMER_15 = interval_command(15)  # every tracker is told this once, after its login's ack


@pytest.fixture(params=[0, 2], ids=["main-process", "intake-workers"])
def tcp(server: Server, request: pytest.FixtureRequest) -> Server:
    """The server, its TCP trackers served by itself or by worker processes."""
    server.tcp_workers = request.param
    return server


def _metrics_show(srv: Server, *lines: str) -> None:
    """Wait for counters to show (workers report theirs to the server within a second)."""
    deadline = time.monotonic() + 30  # a loaded machine: the report itself may be slow
    while True:
        metrics = httpx.get(f"{srv.api}/metrics").text
        missing = [line for line in lines if line not in metrics]
        if not missing:
            return
        assert time.monotonic() < deadline, f"not in /metrics: {missing}"
        time.sleep(0.1)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf


def _recv_frame(s: socket.socket) -> bytes:
    """One H02 reply, up to its '#'."""
    buf = b""
    while not buf.endswith(b"#"):
        chunk = s.recv(1)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf


def _logged_in(s: socket.socket, ack: bytes = LOGIN_ACK) -> None:
    """A GT06 login's acknowledgement, then the one fixed interval command."""
    assert _recv_exact(s, len(ack)) == ack
    assert _recv_exact(s, len(TIMER_15)) == TIMER_15


# reading back what a tracker sent, with no incident behind it: a break-glass read
CHECK = {"purpose": "verification_task", "break_glass": "end-to-end check of the stored fixes"}


def _fixes(api: str, device: str, staff: dict[str, str]) -> list[dict[str, Any]]:
    r = httpx.get(f"{api}/devices/{device}/fixes", params=CHECK, headers=staff)
    assert r.status_code == 200, r.text
    fixes: list[dict[str, Any]] = r.json()["fixes"]
    return fixes


def _staff(srv: Server) -> dict[str, str]:
    r = srv.cli(
        "admin", "create-user", "--username", "sup1", "--password", PASSWORD, "--role", "supervisor"
    )
    assert r.returncode == 0, r.stderr
    srv.start()
    return srv.login("sup1", PASSWORD)


def _tracker(srv: Server, staff: dict[str, str], identifier: str, protocol: str) -> None:
    """An offender wearing a registered tracker."""
    api = f"{srv.api}/api/v1"
    off = httpx.post(f"{api}/people", json={"kind": "offender", "name": "O"}, headers=staff)
    r = httpx.post(
        f"{api}/devices",
        headers=staff,
        json={
            "identifier": identifier,
            "kind": "ankle_monitor",
            "protocol": protocol,
            "person_id": off.json()["id"],
        },
    )
    assert r.status_code == 201


def test_an_h02_tracker_is_acknowledged_only_for_what_is_stored(tcp: Server) -> None:
    server = tcp
    server.h02_port = server.free()
    staff = _staff(server)
    api = f"{server.api}/api/v1"
    _tracker(server, staff, "4209951296", "h02")
    stamp = time.strftime("%H%M%S,A,3733.9780,N,12658.6740,E,000.00,000,%d%m%y", time.gmtime())
    with socket.create_connection(("127.0.0.1", server.h02_port), timeout=10) as s:
        s.sendall(f"*HQ,4209951296,V1,{stamp},FFFFFBFF#".encode())
        reply = _recv_frame(s)
        assert reply.startswith(b"*HQ,4209951296,V4,V1,20") and reply.endswith(b"#")
        command = _recv_frame(s)  # its first frame bound it: the one fixed interval follows
        assert command.startswith(b"*HQ,4209951296,S71,") and command.endswith(b",22,15#")
        s.sendall(b"*HQ,4209951296,HTBT#")
        assert _recv_frame(s) == b"*HQ,4209951296,HTBT#"
    fixes = _fixes(api, "4209951296", staff)
    assert len(fixes) == 1 and abs(fixes[0]["lat"] - 37.56630) < 1e-5
    # an unknown tracker and a malformed frame are refused and close only their connection
    for payload in (
        b"*HQ,999,V1,000000,A,3733.9780,N,12658.6740,E,0,0,010125#",  # unknown tracker
        b"*HQ,4209951296,V1,000000,A,3799.9780,N,12658.6740,E,0,0,010125#",  # 99' of arc
    ):
        with socket.create_connection(("127.0.0.1", server.h02_port), timeout=10) as s:
            s.sendall(payload + b"*HQ,999,HTBT#")
            assert s.recv(200) == b""
    _metrics_show(
        server,
        'bangpae_tcp_rejected_total{protocol="h02",reason="unknown_device"} 1.0',
        'bangpae_tcp_rejected_total{protocol="h02",reason="malformed"} 1.0',
    )


def _gt06_frame(proto: int, content: bytes, serial: int) -> bytes:
    from bangpae.protocols.gt06 import crc_itu

    body = bytes([len(content) + 5, proto]) + content + serial.to_bytes(2, "big")
    return b"\x78\x78" + body + crc_itu(body).to_bytes(2, "big") + b"\r\n"


def test_a_gt06_tracker_logs_in_and_each_position_is_acknowledged_after_storing(
    tcp: Server,
) -> None:
    server = tcp
    server.gt06_port = server.free()
    staff = _staff(server)
    api = f"{server.api}/api/v1"
    _tracker(server, staff, "864717003283581", "gt06")
    t = time.gmtime(time.time() - 5)
    gps = bytes([t.tm_year - 2000, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0xC8])
    gps += int(37.5663 * 1_800_000).to_bytes(4, "big") + int(126.9779 * 1_800_000).to_bytes(
        4, "big"
    )
    gps += bytes([36]) + (0x1400 | 90).to_bytes(2, "big")  # positioned, north, east; 90°
    gps += bytes.fromhex("01cc00287d001fb8")  # LBS
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(_gt06_frame(0x12, gps, 2))  # before login: refused, connection closed
        assert s.recv(64) == b""
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(bytes.fromhex("78780d01086471700328358100093f040d0a"))  # login
        _logged_in(s)
        s.sendall(_gt06_frame(0x12, gps, 3))
        ack = s.recv(64)
        assert ack[:6] == bytes.fromhex("787805120003") and len(ack) == 10
    fixes = _fixes(api, "864717003283581", staff)
    assert len(fixes) == 1 and abs(fixes[0]["lat"] - 37.5663) < 1e-5
    assert abs(fixes[0]["speed_mps"] - 10.0) < 1e-9


def test_a_gt06_strap_cut_in_a_status_packet_opens_a_critical_incident(tcp: Server) -> None:
    server = tcp
    server.gt06_port = server.free()
    staff = _staff(server)
    api = f"{server.api}/api/v1"
    _tracker(server, staff, "864717003283581", "gt06")
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(bytes.fromhex("78780d01086471700328358100093f040d0a"))
        _logged_in(s)
        s.sendall(_gt06_frame(0x13, bytes([0x7C, 0x04, 0x03, 0x00, 0x02]), 4))  # removal
        assert s.recv(64)[:6] == bytes.fromhex("787805130004")
    incidents = httpx.get(f"{api}/incidents", params={"status": "open"}, headers=staff).json()
    assert [(i["kind"], i["priority"]) for i in incidents] == [("tamper", "critical")]


def test_frames_with_a_wrong_crc_pass_only_for_devices_registered_as_lenient(tcp: Server) -> None:
    server = tcp
    server.gt06_port = server.free()
    staff = _staff(server)
    api = f"{server.api}/api/v1"
    off = httpx.post(f"{api}/people", json={"kind": "offender", "name": "O"}, headers=staff)
    for imei, lenient in (("864717003283581", False), ("383714111810415", True)):
        r = httpx.post(
            f"{api}/devices",
            headers=staff,
            json={
                "identifier": imei,
                "kind": "ankle_monitor",
                "protocol": "gt06",
                "person_id": off.json()["id"],
                "lenient_crc": lenient,
            },
        )
        assert r.status_code == 201
    bad_crc = {
        "864717003283581": "78780d01086471700328358100090000" + "0d0a",
        "383714111810415": "78780d0103837141118104150002ffff" + "0d0a",
    }
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(bytes.fromhex(bad_crc["864717003283581"]))
        assert s.recv(64) == b""  # strict: refused
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(bytes.fromhex(bad_crc["383714111810415"]))
        assert _recv_exact(s, 10)[:6] == bytes.fromhex("787805010002")  # lenient: logged in
        assert _recv_exact(s, len(TIMER_15)) == TIMER_15
    _metrics_show(server, 'bangpae_tcp_rejected_total{protocol="gt06",reason="malformed"} 1.0')


def _workers(srv: Server) -> list[int]:
    assert srv.proc is not None
    with open(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def test_an_intake_worker_that_dies_is_replaced_and_no_acknowledged_fix_is_lost(
    server: Server,
) -> None:
    server.gt06_port = server.free()
    server.tcp_workers = 2
    staff = _staff(server)
    api = f"{server.api}/api/v1"
    _tracker(server, staff, "864717003283581", "gt06")
    workers = _workers(server)
    assert len(workers) == 2
    for pid in workers:  # a worker parses what strangers send: it holds no database or key
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(x.split(b"=", 1) for x in fh.read().split(b"\0") if b"=" in x)
        assert not [k for k in env if k.startswith(b"BANGPAE_") and k != b"BANGPAE_LOG_LEVEL"]
        opened = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        log = str(server.data_dir / "serve.log")  # its stderr goes where the server's does
        assert not [p for p in opened if str(server.data_dir) in p and p != log]

    def position(serial: int, seconds_ago: int) -> bytes:
        t = time.gmtime(time.time() - seconds_ago)
        gps = bytes([t.tm_year - 2000, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0xC8])
        gps += int(37.5663 * 1_800_000).to_bytes(4, "big")
        gps += int(126.9779 * 1_800_000).to_bytes(4, "big")
        gps += bytes([36]) + (0x1400 | 90).to_bytes(2, "big") + bytes.fromhex("01cc00287d001fb8")
        return _gt06_frame(0x12, gps, serial)

    acked = 0
    login = bytes.fromhex("78780d01086471700328358100093f040d0a")
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(login)
        _logged_in(s)
        for serial in range(2, 7):
            s.sendall(position(serial, 60 - serial))
            assert s.recv(64)[:6] == bytes.fromhex("78780512") + serial.to_bytes(2, "big")
            acked += 1
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert s.recv(64) == b""  # its worker is gone: the device reconnects, as trackers do
    deadline = time.monotonic() + 15
    while sorted(_workers(server)) == sorted(workers) or len(_workers(server)) < 2:
        assert time.monotonic() < deadline, "the workers were not started again"
        time.sleep(0.1)
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
                s.sendall(login)
                _logged_in(s)
                s.sendall(position(9, 30))
                assert s.recv(64)[:6] == bytes.fromhex("787805120009")
                acked += 1
                break
        except (ConnectionError, AssertionError):
            assert time.monotonic() < deadline, "no worker took the device back"
            time.sleep(0.2)
    fixes = _fixes(api, "864717003283581", staff)
    assert len(fixes) == acked == 6
    _metrics_show(server, "bangpae_intake_restarts_total 2.0")


def test_a_probing_address_does_not_keep_registered_trackers_behind_it_offline(
    tcp: Server,
) -> None:
    server = tcp
    server.gt06_port = server.free()
    staff = _staff(server)
    _tracker(server, staff, "864717003283581", "gt06")
    for i in range(80):  # a stranger behind the same address guesses IMEIs (each worker
        # process keeps its own count: enough for every one of them to refuse him)
        with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
            s.sendall(_gt06_frame(0x01, bytes.fromhex(f"0{864717000000000 + i:015d}"), 1))
            assert s.recv(64) == b""  # unknown: refused, closed
    _metrics_show(server, 'reason="rate_limited"')  # the prober is being refused...
    with socket.create_connection(("127.0.0.1", server.gt06_port), timeout=10) as s:
        s.sendall(bytes.fromhex("78780d01086471700328358100093f040d0a"))
        _logged_in(s)  # ...but the registered tracker from the same address logs in
