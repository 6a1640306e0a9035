"""What a field officer is sent to when the alarm came from his device, not hers
(docs/disclosure.md, "Field officers"): whoever knows his device's identity can press it."""

from __future__ import annotations

from dataclasses import replace

from tests.integration import test_sos_loop
from tests.integration.test_sos_loop import T0, Env, act, dispatches, fix

env = test_sos_loop.env  # the real composition root, SQLite and PostgreSQL


async def test_an_sos_from_his_device_does_not_send_the_officer_to_her_as_the_requester(
    env: Env,
) -> None:
    await env.ctx.ingest.submit([fix(env.phone, -30, 0.0)])
    env.clock.set(T0 + 1)
    pressed = replace(fix(env.ankle, 1, 6000.0), alarms=frozenset({"sos"}))
    await env.ctx.ingest.submit([pressed])
    sos = [i for i in env.ctx.store.incidents(status="open") if i.kind == "sos"]
    assert len(sos) == 1, env.ctx.store.incidents(status="open")
    record = env.ctx.store.get_incident(sos[0].id)
    await act(env, record.id, "dispatch", officer_id=env.officer)
    [d] = await dispatches(env)
    # measured: how far from the one who pressed it the officer is sent, under which label
    target = d["target"]
    assert target is not None
    assert target["whom"] != "requester" or record.person_id == env.vic, (
        f"sent to her ({target['whom']}) for an SOS pressed on his device 6 km away"
    )
