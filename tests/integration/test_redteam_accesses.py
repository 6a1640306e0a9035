"""A staff member curious beyond their purpose, as her "who saw my location" list shows
it (docs/disclosure.md): grouping repeated reads must not hide what one of them read."""

from __future__ import annotations

from tests.integration import test_sos_loop
from tests.integration.test_sos_loop import T0, Env, fix

env = test_sos_loop.env  # the real composition root, SQLite and PostgreSQL


async def test_a_read_of_her_whole_track_is_not_hidden_in_a_row_of_one_position(
    env: Env,
) -> None:
    await env.ctx.ingest.submit([fix(env.phone, -3600 + 60 * k, 10.0 * k) for k in range(50)])
    url = f"/api/v1/devices/{env.phone}/fixes"
    reason = {"purpose": "incident_response", "break_glass": "checking a report she made by phone"}
    r = await env.api.get(url, params={**reason, "limit": 1000}, headers=env.h["op"])
    assert r.status_code == 200, r.text
    whole = len(r.json()["fixes"])
    assert whole == 50
    env.clock.set(T0 + 60)  # a minute later, the same operator role reads one position
    r = await env.api.get(url, params={**reason, "limit": 1}, headers=env.h["op"])
    assert r.status_code == 200, r.text
    rows = (await env.api.get("/api/v1/victim/accesses", headers=env.h["vic"])).json()
    shown = [f for row in rows for f in row["fields"] if f.startswith("count=")]
    # measured: how many of her positions she is told were read
    told = sum(int(f[6:]) for f in shown)
    assert f"count={whole}" in shown, (
        f"{whole + 1} positions of hers were read; her list says {told}: {rows}"
    )
