"""W1's fixes are generated bit for bit as docs/workloads.md prescribes."""

from __future__ import annotations

from bangpae.benchmarks.w1 import generate, reference_transitions


def test_the_w1_fixes_match_the_published_sha256_for_1000_pairs() -> None:
    f = generate(1000)
    assert f.lat.shape == (60, 2000)
    assert f.sha256() == "96add9c975b4dad6a6d2f420e9cd407797fa9345159de46b7e0873693f9e51c4"


def test_the_raw_600_m_rule_gives_the_published_transition_counts() -> None:
    _, enter, leave = reference_transitions(generate(1000))
    assert (enter, leave) == (147, 28)
