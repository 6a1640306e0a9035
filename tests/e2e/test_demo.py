"""``bangpae demo`` shows moving devices within 15 seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .conftest import free_port


def test_the_demo_shows_moving_devices_within_15_seconds(tmp_path: Path) -> None:
    env = {**os.environ, "BANGPAE_DATA_DIR": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "bangpae.cli",
        "demo",
        "--duration",
        "14",
        "--http",
        f"127.0.0.1:{free_port()}",
        "--osmand",
        f"127.0.0.1:{free_port()}",
        "--gt06",
        "off",
        "--h02",
        "off",
    ]
    started = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert time.monotonic() - started < 40
    text = out.stdout
    assert "victim-a" in text and "operator" in text  # logins are printed
    assert re.search(r"officer-kim\s+field_officer\s+\S{12,}", text)  # the field app
    distances = [
        int(d.replace(",", "")) for d in re.findall(r"order 1: \w+\s+\S+\s+([\d,]+) m", text)
    ]
    assert len(distances) >= 4, text
    assert distances[-1] < distances[0] - 100, distances  # the offender is moving in
