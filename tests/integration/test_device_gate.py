"""The device gate: one answer to "who is this device" for every way in, and the fix-time
rule that every way in applies, TCP trackers included."""

from __future__ import annotations

import pytest

from bangpae.services.devicekeys import Known, new_key
from bangpae.services.devices import BAD_KEY, LIMITED, NO_KEY, UNKNOWN, Refused
from tests.integration.test_device_auth_attacks import HOME, NAT, T0, env  # noqa: F401
from tests.integration.trackers import IMEI, Client, at, serve, stop, until


async def test_the_gate_lets_each_protocol_in_by_its_own_rule(env) -> None:  # noqa: F811
    ctx, _, keys, _ = env
    gate = ctx.device_gate
    found = await gate.admit("osmand", "ANKLE", keys["ANKLE"], HOME, T0)
    assert isinstance(found, Known) and found.identifier == "ANKLE"
    assert await gate.admit("osmand", "ANKLE", new_key(), HOME, T0) == Refused(BAD_KEY)
    assert await gate.admit("osmand", "NOBODY", new_key(), HOME, T0) == Refused(UNKNOWN)
    # over MQTT the broker authenticated the client: being registered is enough
    found = await gate.admit("owntracks_mqtt", "owntracks/kim/phone", None, HOME, T0)
    assert isinstance(found, Known)
    # a device registered without a key: let in as the operator allows, never on the API
    pid = ctx.store.add_person("offender", "B")
    ctx.store.add_device("BARE", "ankle_monitor", "osmand", pid, None)
    ctx.settings.allow_keyless_devices = True
    assert isinstance(await gate.admit("osmand", "BARE", None, HOME, T0), Known)
    assert await gate.admit("api", "BARE", None, HOME, T0) == Refused(NO_KEY)
    with pytest.raises(KeyError):  # a way in the gate has no rule for is a mistake, not open
        await gate.admit("nmea", "ANKLE", None, HOME, T0)


async def test_a_source_refused_for_failures_still_lets_registered_devices_in(env) -> None:  # noqa: F811
    ctx, _, keys, _ = env
    gate = ctx.device_gate
    for i in range(20):
        assert await gate.admit("osmand", f"GUESS-{i}", new_key(), NAT, T0) == Refused(UNKNOWN)
    assert await gate.admit("osmand", "NOBODY", new_key(), NAT, T0) == Refused(LIMITED)
    assert await gate.admit("api", "API-1", new_key(), NAT, T0) == Refused(LIMITED)
    assert isinstance(await gate.admit("osmand", "ANKLE", keys["ANKLE"], NAT, T0), Known)
    assert isinstance(await gate.admit("gt06", "ANKLE", None, NAT, T0), Known)


@pytest.mark.parametrize("protocol", ["gt06", "h02"])
async def test_a_tracker_fix_ten_minutes_ahead_is_refused_and_not_stored(
    env,  # noqa: F811
    protocol: str,
) -> None:
    ctx, _, _, _ = env
    ident = IMEI[protocol]
    pid = ctx.store.add_person("offender", "T")
    ctx.store.add_device(ident, "ankle_monitor", protocol, pid, None, at=T0 - 3600)
    before = ctx.store.count_fixes()
    port, server = await serve(ctx, protocol, 0)
    try:
        c = await Client.open(protocol, port)
        lat, lon = at(100.0)
        await c.login(ident, lat, lon, T0 - 5)  # H02: its first position names it
        await until(lambda: c.data)
        await c.position(ident, lat, lon, T0 + 600)
        await until(lambda: c.closed)  # a frame from ten minutes ahead ends the connection
        await c.close()
    finally:
        await stop(server)
    assert ctx.store.count_fixes() == before + (1 if protocol == "h02" else 0)
