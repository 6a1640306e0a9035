"""The flood benchmark end to end, tiny: it still starts a server, floods it and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

PHASES = ("baseline", "key_flood", "half_open")
PROTOCOLS = ("osmand", "gt06", "h02")


def test_flood_benchmark_reports_every_phase_and_loses_no_acknowledged_fix() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bangpae.cli",
            "bench",
            "flood",
            *("--phase-seconds", "1.5", "--settle-seconds", "0.3"),
            *("--clients", "3", "--half-open", "40", "--devices", "3", "--sources", "64"),
        ],
        env={**os.environ, "BANGPAE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["phase"] for x in lines] == [*PHASES, "summary"]
    for line in lines[:3]:
        assert line["workload"] == "flood"
        assert 1.4 <= line["seconds"] <= 2.5
        # one read per ~100 ms at most; a flooded server may answer none in so short a phase
        assert 0 <= line["victim_reads"] <= 25
        if line["victim_reads"]:
            assert line["victim_p50_ms"] <= line["victim_p99_ms"] <= line["victim_max_ms"]
        assert line["good_acked"] == sum(line[f"good_{p}"]["acked"] for p in PROTOCOLS)
        assert line["rss_mb_max"] >= line["rss_mb_start"] > 10
        assert line["fds_max"] >= line["fds_start"] > 3
    baseline, keys, half_open, summary = lines
    assert "attack" not in baseline
    assert baseline["victim_reads"] >= 3 and baseline["victim_errors"] == 0
    for proto in PROTOCOLS:
        assert baseline[f"good_{proto}"]["acked"] >= 1, proto
    attack = keys["attack"]
    assert attack["key_total"] + attack["key_unanswered_at_stop"] >= 1
    assert attack["key_accepted"] == 0
    for answer in attack["key_requests"]:  # refused, whichever way (401, 403, 429, 503...)
        endpoint, status = answer.split(":")
        assert endpoint in ("osmand", "fixes", "owntracks") and int(status) >= 400, answer
    held = half_open["attack"]
    assert held["half_open_target"] == 40 and held["half_open_held_max"] >= 1
    # every acknowledged fix is in the store after a clean stop
    assert summary["acked"] >= sum(x["good_acked"] for x in lines[:3])
    assert summary["stored"] >= summary["acked"] and summary["acked_lost"] == 0
    assert summary["server_exit_code"] == 0 and summary["key_accepted"] == 0
    assert summary["config"]["devices"] == 4  # whole pairs: 2 orders
