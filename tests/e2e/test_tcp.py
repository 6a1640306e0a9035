"""Trackers over real TCP sockets against a real server: acknowledged after storing."""

from __future__ import annotations

import socket
import time

import httpx

from .conftest import Server
from .test_serve import PASSWORD


def _staff(srv: Server) -> dict[str, str]:
    r = srv.cli(
        "admin", "create-user", "--username", "sup1", "--password", PASSWORD, "--role", "supervisor"
    )
    assert r.returncode == 0, r.stderr
    srv.start()
    return srv.login("sup1", PASSWORD)


def test_an_h02_tracker_is_acknowledged_only_for_what_is_stored(server: Server) -> None:
    server.h02_port = server.free()
    staff = _staff(server)
    api = f"{server.api}/api/v1"
    off = httpx.post(f"{api}/people", json={"kind": "offender", "name": "O"}, headers=staff)
    r = httpx.post(
        f"{api}/devices",
        headers=staff,
        json={
            "identifier": "4209951296",
            "kind": "ankle_monitor",
            "protocol": "h02",
            "person_id": off.json()["id"],
        },
    )
    assert r.status_code == 201
    stamp = time.strftime("%H%M%S,A,3733.9780,N,12658.6740,E,000.00,000,%d%m%y", time.gmtime())
    with socket.create_connection(("127.0.0.1", server.h02_port), timeout=10) as s:
        s.sendall(f"*HQ,4209951296,V1,{stamp},FFFFFBFF#".encode())
        reply = s.recv(200)
        assert reply.startswith(b"*HQ,4209951296,V4,V1,20") and reply.endswith(b"#")
        s.sendall(b"*HQ,4209951296,HTBT#")
        assert s.recv(200) == b"*HQ,4209951296,HTBT#"
    fixes = httpx.get(f"{api}/devices/4209951296/fixes", headers=staff).json()["fixes"]
    assert len(fixes) == 1 and abs(fixes[0]["lat"] - 37.56630) < 1e-5
    # an unknown tracker and a malformed frame are refused and close only their connection
    for payload in (
        b"*HQ,999,V1,000000,A,3733.9780,N,12658.6740,E,0,0,010125#",  # unknown tracker
        b"*HQ,4209951296,V1,000000,A,3799.9780,N,12658.6740,E,0,0,010125#",  # 99' of arc
    ):
        with socket.create_connection(("127.0.0.1", server.h02_port), timeout=10) as s:
            s.sendall(payload + b"*HQ,999,HTBT#")
            assert s.recv(200) == b""
    metrics = httpx.get(f"{server.api}/metrics").text
    assert 'bangpae_tcp_rejected_total{protocol="h02",reason="unknown_device"} 1.0' in metrics
    assert 'bangpae_tcp_rejected_total{protocol="h02",reason="malformed"} 1.0' in metrics
