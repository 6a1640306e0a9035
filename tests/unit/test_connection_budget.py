"""Connection budgets: who is admitted, who is refused, and how the caps fit the limit."""

from __future__ import annotations

import ipaddress

import pytest

from bangpae.adapters.listeners.budget import (
    BudgetError,
    ConnectionBudget,
    address_key,
    fit,
    room,
)


def test_one_address_holds_no_more_than_its_cap_and_others_still_get_in() -> None:
    b = ConnectionBudget("gt06", max_connections=10, max_per_address=3)
    keys = [b.admit("198.51.100.7", 0.0) for _ in range(5)]
    assert keys.count(None) == 2 and b.open == 3
    assert b.admit("203.0.113.9", 0.0) is not None
    assert b.refused == {"total": 0, "per_address": 2}


def test_the_listener_cap_holds_whatever_the_number_of_addresses() -> None:
    b = ConnectionBudget("osmand", max_connections=4, max_per_address=2)
    admitted = [b.admit(f"192.0.2.{i}", 0.0) for i in range(10)]
    assert sum(k is not None for k in admitted) == 4
    assert b.refused["total"] == 6


def test_a_released_connection_makes_room_again() -> None:
    b = ConnectionBudget("api", max_connections=2, max_per_address=1)
    key = b.admit("192.0.2.1", 0.0)
    assert key is not None and b.admit("192.0.2.1", 0.0) is None
    b.release(key)
    assert b.open == 0 and b.by_address == {}
    assert b.admit("192.0.2.1", 0.0) is not None


def test_an_ipv6_host_is_counted_by_its_64_so_it_cannot_spread_over_its_own_addresses() -> None:
    b = ConnectionBudget("api", max_connections=100, max_per_address=2)
    hosts = [f"2001:db8:1:2::{i:x}" for i in range(1, 6)]
    assert sum(b.admit(h, 0.0) is not None for h in hosts) == 2
    assert b.admit("2001:db8:1:3::1", 0.0) is not None  # another subscriber's /64


def test_an_ipv4_mapped_address_counts_as_the_ipv4_address() -> None:
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8::1") == "2001:db8::/64"


def test_a_trusted_proxy_is_held_only_to_the_listener_cap() -> None:
    proxy = [ipaddress.ip_network("10.0.0.0/30")]
    b = ConnectionBudget("api", max_connections=5, max_per_address=1, exempt=proxy)
    assert sum(b.admit("10.0.0.2", 0.0) is not None for _ in range(8)) == 5
    assert b.refused == {"total": 3, "per_address": 0}


def test_timeouts_are_counted_by_reason() -> None:
    b = ConnectionBudget("api", 1, 1)
    b.expired("header")
    b.expired("header")
    b.expired("body")
    assert b.snapshot().timed_out == {"header": 2, "body": 1, "idle": 0, "login": 0}


def test_refusals_are_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    b = ConnectionBudget("gt06", 1, 1)
    assert b.admit("192.0.2.1", 0.0) is not None
    for t in (1.0, 2.0, 30.0, 62.0, 63.0):
        assert b.admit("192.0.2.1", t) is None
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert "3 more connection(s)" in logged[1]
    assert not any("192.0.2.1" in m for m in logged)  # counts, never addresses


def test_a_quarter_of_the_open_files_limit_and_at_least_256_stay_out_of_the_budgets() -> None:
    assert room(20000) == 15000
    assert room(1024) == 768
    assert room(300) == 44
    assert room(100) == 0


def test_defaults_shrink_in_proportion_to_fit_and_explicit_caps_never_do() -> None:
    wanted = {"api": 2000, "osmand": 2000, "gt06": 8000, "h02": 8000}
    assert fit(wanted, [], 20000) == wanted
    assert fit(wanted, [], 15000) == {"api": 1500, "osmand": 1500, "gt06": 6000, "h02": 6000}
    fitted = fit(wanted, ["gt06"], 15000)
    assert fitted["gt06"] == 8000 and sum(fitted.values()) <= 15000
    assert fitted["api"] == fitted["osmand"] and abs(fitted["h02"] - 4 * fitted["api"]) < 4


def test_explicit_caps_that_cannot_fit_are_an_error() -> None:
    with pytest.raises(BudgetError, match="gt06"):
        fit({"api": 2000, "gt06": 30000}, ["gt06"], 15000)


def test_a_workers_budget_report_is_taken_only_for_its_own_listeners_and_as_counts() -> None:
    from bangpae.adapters.listeners.intake_worker import (
        ChannelError,
        budgets_payload,
        unpack_budgets,
    )

    b = ConnectionBudget("gt06", 8, 3)
    b.admit("192.0.2.1", 0.0)
    b.expired("login")
    (got,) = unpack_budgets(budgets_payload({"gt06": b}), ["gt06"]).values()
    assert got.open == 1 and got.timed_out["login"] == 1 and got.refused["total"] == 0
    for bad in (
        b'{"h02": {"open": 1, "refused": {}, "timed_out": {}}}',  # not its listener
        b'{"gt06": {"open": -1, "refused": {}, "timed_out": {}}}',
        b'{"gt06": {"open": 1, "refused": {"because": 1}, "timed_out": {}}}',
        b'{"gt06": {"open": true, "refused": {}, "timed_out": {}}}',
        b'{"gt06": {"open": 1, "refused": {"total": 1.5}, "timed_out": {}}}',
        b"[]",
    ):
        with pytest.raises(ChannelError):
            unpack_budgets(bad, ["gt06"])
