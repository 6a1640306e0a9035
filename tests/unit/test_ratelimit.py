"""Failed identifications are limited per source, in a sliding window."""

from __future__ import annotations

from bangpae.services.ratelimit import FailureLimiter


def test_a_source_is_blocked_after_too_many_failures_and_released_as_they_age() -> None:
    lim = FailureLimiter(max_failures=3, window_s=60)
    for t in (0, 10, 20):
        assert not lim.blocked("10.0.0.1", t)
        lim.failed("10.0.0.1", t)
    assert lim.blocked("10.0.0.1", 21)
    assert not lim.blocked("10.0.0.2", 21)  # others are not punished
    assert not lim.blocked("10.0.0.1", 61)  # the first failure aged out


def test_memory_stays_bounded_under_a_spray_of_sources() -> None:
    lim = FailureLimiter(max_failures=3, window_s=60, max_sources=100)
    for i in range(10_000):
        lim.failed(f"src{i}", 1.0)
    assert len(lim._failures) <= 100


def test_devices_connect_only_from_the_allowed_networks() -> None:
    import ipaddress

    from bangpae.services.ratelimit import source_allowed

    nets = [ipaddress.ip_network("10.8.0.0/16"), ipaddress.ip_network("::1/128")]
    assert source_allowed("10.8.3.4", nets) and source_allowed("::1", nets)
    assert not source_allowed("192.0.2.1", nets) and not source_allowed("not-an-ip", nets)
    assert source_allowed("192.0.2.1", [])  # no list: any address
